// The autograd graph behind a tensor, for tests that pin which backward nodes a forward records.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

namespace mosaic::testing {

// Every node of the autograd graph behind `t`, by name (each node once).
inline std::multiset<std::string> GraphNodeNames(const torch::Tensor& t) {
  std::multiset<std::string> names;
  std::set<const torch::autograd::Node*> seen;
  std::vector<std::shared_ptr<torch::autograd::Node>> todo{t.grad_fn()};
  while (!todo.empty()) {
    auto node = todo.back();
    todo.pop_back();
    if (!node || !seen.insert(node.get()).second) continue;
    names.insert(node->name());
    for (const auto& edge : node->next_edges()) todo.push_back(edge.function);
  }
  return names;
}

}  // namespace mosaic::testing
