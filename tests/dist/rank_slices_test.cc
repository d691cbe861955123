// Note [rank slices] (train/data_loader.cc): W loaders with shard_count W read disjoint slices
// whose union, batch by batch, is exactly what one loader with the global batch reads, across
// epoch boundaries, and they end at the same (global) data position.
#include <gtest/gtest.h>

#include <set>

#include "train/data_loader.h"
#include "train/example_source.h"
#include "train/shapes_dataset.h"
#include "train/tokenizer.h"

namespace mosaic::train {
namespace {

TEST(RankSlices, RanksReadDisjointSlicesOfTheOneLoaderBatches) {
  auto tok_or =
      Tokenizer::Load(std::string(MOSAIC_SOURCE_DIR) + "/configs/tokenizers/shapes.model");
  ASSERT_TRUE(tok_or.ok()) << tok_or.status();
  auto tok = std::make_shared<const Tokenizer>(std::move(*tok_or));
  ShapesOptions shapes;
  shapes.image_size = 16;
  // 10 examples, global batch 6: the third batch crosses into epoch 1 (a new permutation).
  std::shared_ptr<const ExampleSource> src = MakeShapesSource(/*seed=*/4, 10, shapes);
  LoaderOptions o;
  o.image_size = 16;
  o.seq_len = 16;
  o.seed = 9;
  constexpr int kWorld = 3, kGlobal = 6, kBatches = 4;

  o.batch_size = kGlobal;
  DataLoader one(src, tok, o);
  std::vector<std::unique_ptr<DataLoader>> ranks;
  for (int r = 0; r < kWorld; ++r) {
    LoaderOptions ro = o;
    ro.batch_size = kGlobal / kWorld;
    ro.shard_count = kWorld;
    ro.shard_index = r;
    ranks.push_back(std::make_unique<DataLoader>(src, tok, ro));
  }
  for (int b = 0; b < kBatches; ++b) {
    auto whole = one.Next();
    ASSERT_TRUE(whole.ok()) << whole.status();
    std::vector<std::string> joined;
    for (int r = 0; r < kWorld; ++r) {
      auto part = ranks[r]->Next();
      ASSERT_TRUE(part.ok()) << part.status();
      ASSERT_EQ(part->size(), kGlobal / kWorld);
      EXPECT_TRUE(part->next == whole->next) << "batch " << b << " rank " << r;
      // The rank's rows are rows [r * 2, r * 2 + 2) of the one-loader batch, pixel for pixel.
      EXPECT_TRUE(torch::equal(part->images, whole->images.narrow(0, r * 2, 2)));
      EXPECT_TRUE(torch::equal(part->tokens, whole->tokens.narrow(0, r * 2, 2)));
      joined.insert(joined.end(), part->names.begin(), part->names.end());
    }
    EXPECT_EQ(joined, whole->names) << "batch " << b;
    // Batches 0 and 2 lie within one epoch (1 and 3 straddle a boundary, where a permutation
    // may repeat an example of the previous one): there no two ranks share an example.
    if (b % 2 == 0) {
      EXPECT_EQ(std::set<std::string>(joined.begin(), joined.end()).size(), joined.size());
    }
  }
}

}  // namespace
}  // namespace mosaic::train
