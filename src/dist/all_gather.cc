// Differentiable all-gather (see all_gather.h).
#include "dist/all_gather.h"

namespace mosaic::dist {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Context* ContextOf(AutogradContext* actx) {
  return reinterpret_cast<Context*>(actx->saved_data["ctx"].toInt());
}

struct AllGatherFunction : public torch::autograd::Function<AllGatherFunction> {
  static torch::Tensor forward(AutogradContext* actx, const torch::Tensor& x, int64_t ctx_ptr) {
    Context& ctx = *reinterpret_cast<Context*>(ctx_ptr);
    const int W = ctx.world_size();
    // Row counts first: a rank whose batch lost examples to --on-bad-data=skip has fewer.
    torch::Tensor n = torch::full({1}, x.size(0), x.options().dtype(torch::kLong));
    StatusOr<torch::Tensor> counts_or = ctx.AllGather(n, "all-gather of the feature row counts");
    if (!counts_or.ok()) throw CollectiveError(counts_or.status());
    torch::Tensor counts = counts_or->cpu();  // (W)
    auto c = counts.accessor<int64_t, 1>();
    int64_t max_rows = 0, offset = 0, total = 0;
    for (int r = 0; r < W; ++r) {
      max_rows = std::max(max_rows, c[r]);
      if (r < ctx.rank()) offset += c[r];
      total += c[r];
    }
    torch::Tensor padded = x.contiguous();
    if (x.size(0) < max_rows) {
      std::vector<int64_t> pad_shape = x.sizes().vec();
      pad_shape[0] = max_rows - x.size(0);
      padded = torch::cat({padded, torch::zeros(pad_shape, x.options())});
    }
    StatusOr<torch::Tensor> all = ctx.AllGather(padded, "all-gather of the contrastive features");
    if (!all.ok()) throw CollectiveError(all.status());
    torch::Tensor gathered = *all;  // (W * max_rows, ...)
    if (total != W * max_rows) {
      std::vector<torch::Tensor> parts;
      for (int r = 0; r < W; ++r)
        parts.push_back(gathered.narrow(0, r * max_rows, c[r]));
      gathered = torch::cat(parts);  // (total, ...)
    }
    actx->saved_data["ctx"] = ctx_ptr;
    actx->saved_data["offset"] = offset;
    actx->saved_data["rows"] = x.size(0);
    return gathered;
  }

  static variable_list backward(AutogradContext* actx, variable_list grads) {
    Context& ctx = *ContextOf(actx);
    torch::Tensor g = grads[0].contiguous().clone();  // (total, ...), the same on every rank
    Status s = ctx.AllReduceSum(g, "all-reduce of the contrastive features' gradient");
    if (!s.ok()) throw CollectiveError(s);
    const int64_t offset = actx->saved_data["offset"].toInt();
    const int64_t rows = actx->saved_data["rows"].toInt();
    return {g.narrow(0, offset, rows), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor AllGatherWithGrad(Context& ctx, const torch::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1, "AllGatherWithGrad needs at least one dimension");
  return AllGatherFunction::apply(x, reinterpret_cast<int64_t>(&ctx));
}

}  // namespace mosaic::dist
