// Data tests: image/audio codecs, the shapes generator, the tokenizer, folder and tar-shard
// readers on files written here with the real libraries, broken data reported by file name,
// and the loader's seeded order and resumable position.
#include <gtest/gtest.h>

#include <zlib.h>

#include <set>

#include "test_util.h"
#include "train/audio.h"
#include "train/data_loader.h"
#include "train/example_source.h"
#include "train/image_codec.h"
#include "train/shapes_dataset.h"
#include "train/tokenizer.h"

namespace mosaic::train {
namespace {

using testing::TempDir;
using testing::WriteFile;

std::string ShippedTokenizer() {
  return testing::SourceDir() + "/configs/tokenizers/shapes.model";
}

std::shared_ptr<const Tokenizer> LoadTokenizer() {
  auto tok = Tokenizer::Load(ShippedTokenizer());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return std::make_shared<const Tokenizer>(std::move(*tok));
}

ShapesOptions SmallShapes(int frames = 0) {
  ShapesOptions o;
  o.image_size = 24;
  o.audio_frames = frames;
  return o;
}

// Writes examples 0..n-1 of the shapes set as real files: even ones PNG, odd ones JPEG.
std::vector<ShardFile> ShapeFiles(int n, bool audio) {
  std::vector<ShardFile> files;
  for (int i = 0; i < n; ++i) {
    ShapeExample ex = GenerateShape(7, i, SmallShapes(audio ? 20 : 0));
    char key[32];
    std::snprintf(key, sizeof(key), "sample%03d", i);
    if (i % 2 == 0) {
      files.push_back({std::string(key) + ".png", *EncodePng(ex.image)});
    } else {
      files.push_back({std::string(key) + ".jpg", *EncodeJpeg(ex.image)});
    }
    files.push_back({std::string(key) + ".txt", ex.caption + "\n"});
    if (audio) files.push_back({std::string(key) + ".wav", *EncodeWav(ex.audio)});
  }
  return files;
}

TEST(ImageCodec, PngRoundTripIsExactAndJpegIsClose) {
  ShapeExample ex = GenerateShape(1, 3, SmallShapes());
  auto png = EncodePng(ex.image);
  ASSERT_TRUE(png.ok()) << png.status();
  auto back = DecodeImage(*png, "x.png");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->pixels, ex.image.pixels);

  auto jpg = EncodeJpeg(ex.image, 95);
  ASSERT_TRUE(jpg.ok());
  auto jback = DecodeImage(*jpg, "x.jpg");
  ASSERT_TRUE(jback.ok()) << jback.status();
  ASSERT_EQ(jback->width, 24);
  double err = 0;
  for (size_t i = 0; i < ex.image.pixels.size(); ++i) {
    err += std::abs(int(jback->pixels[i]) - int(ex.image.pixels[i]));
  }
  EXPECT_LT(err / ex.image.pixels.size(), 12.0);
}

TEST(ImageCodec, BrokenImagesAreReportedWithTheirName) {
  auto a = DecodeImage("hello", "dir/cat.jpg");
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("dir/cat.jpg"), std::string::npos);
  // A JPEG signature followed by garbage: libjpeg's own error comes through.
  auto b = DecodeImage(std::string("\xFF\xD8\xFF\xE0garbage", 11), "dir/dog.jpg");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("dir/dog.jpg: cannot decode JPEG"), std::string::npos)
      << b.status();
  // A PNG cut in half.
  std::string png = *EncodePng(GenerateShape(1, 1, SmallShapes()).image);
  auto c = DecodeImage(png.substr(0, png.size() / 2), "half.png");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("half.png: cannot decode PNG"), std::string::npos);
}

// A header claiming 60000 x 60000 pixels is refused before 10 GB are allocated.
TEST(ImageCodec, HugeDimensionsAreRefusedBeforeDecoding) {
  Image small(8, 8);
  auto jpg = EncodeJpeg(small);
  auto png = EncodePng(small);
  ASSERT_TRUE(jpg.ok() && png.ok());
  std::string big_jpg = *jpg;
  const size_t sof = big_jpg.find("\xFF\xC0");
  ASSERT_NE(sof, std::string::npos);
  for (size_t at : {sof + 5, sof + 7}) {  // height, width (big-endian)
    big_jpg[at] = static_cast<char>(0xEA);
    big_jpg[at + 1] = static_cast<char>(0x60);
  }
  auto a = DecodeImage(big_jpg, "big.jpg");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(),
            "big.jpg: cannot decode JPEG: image is 60000x60000 pixels, more than the limit of "
            "67108864");
  std::string big_png = *png;  // IHDR: width at 16, height at 20, its CRC at 29
  for (size_t at : {16, 20}) {
    big_png.replace(at, 4, std::string("\x00\x00\xEA\x60", 4));
  }
  const uint32_t crc = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(big_png.data() + 12), 17));
  for (int i = 0; i < 4; ++i)
    big_png[29 + i] = static_cast<char>((crc >> (24 - 8 * i)) & 0xFF);
  auto b = DecodeImage(big_png, "big.png");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(),
            "big.png: cannot decode PNG: image is 60000x60000 pixels, more than the limit of "
            "67108864");
}

TEST(Audio, WavRoundTripAndToneMovesTheMelPeak) {
  ShapesOptions o = SmallShapes(50);
  // Find two examples with different colors (different tone pitch).
  std::vector<ShapeExample> ex;
  for (int i = 0; i < 40; ++i)
    ex.push_back(GenerateShape(3, i, o));
  auto wav = EncodeWav(ex[0].audio);
  ASSERT_TRUE(wav.ok());
  auto back = DecodeAudio(*wav, "a.wav");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->sample_rate, 16000);
  ASSERT_EQ(back->samples.size(), ex[0].audio.samples.size());
  for (size_t i = 0; i < back->samples.size(); i += 97) {
    EXPECT_NEAR(back->samples[i], ex[0].audio.samples[i], 1e-3);
  }
  EXPECT_FALSE(DecodeAudio("RIFFnonsense", "b.wav").ok());

  // Color -> pitch: red (lowest) peaks in a lower mel band than white (highest).
  auto peak = [&](const std::string& color) {
    for (auto& e : ex) {
      if (e.caption.find(" " + color + " ") != std::string::npos) {
        auto mel = LogMelSpectrogram(e.audio, 40, 50);
        EXPECT_EQ(mel.sizes(), (std::vector<int64_t>{40, 50}));
        return mel.mean(1).argmax().item<int64_t>();
      }
    }
    ADD_FAILURE() << "no " << color << " example";
    return int64_t{-1};
  };
  EXPECT_LT(peak("red"), peak("white"));
}

TEST(Shapes, DeterministicFromTheSeed) {
  ShapesOptions o = SmallShapes(10);
  for (int i : {0, 5, 123456}) {
    ShapeExample a = GenerateShape(42, i, o), b = GenerateShape(42, i, o);
    EXPECT_EQ(a.caption, b.caption);
    EXPECT_EQ(a.image.pixels, b.image.pixels);
    EXPECT_EQ(a.audio.samples, b.audio.samples);
  }
  // Another seed gives other pictures; captions come from the known set and vary.
  std::set<std::string> all;
  for (auto& c : AllShapeCaptions())
    all.insert(c);
  EXPECT_EQ(all.size(), 432u);
  std::set<std::string> seen;
  int differ = 0;
  for (int i = 0; i < 50; ++i) {
    ShapeExample a = GenerateShape(42, i, o), b = GenerateShape(43, i, o);
    differ += a.image.pixels != b.image.pixels;
    EXPECT_TRUE(all.count(a.caption)) << a.caption;
    seen.insert(a.caption);
  }
  EXPECT_EQ(differ, 50);
  EXPECT_GT(seen.size(), 40u);
  EXPECT_EQ(GenerateShape(42, 0, o).caption, GenerateShape(42, 0, o).caption);
}

TEST(Shapes, CaptionDescribesThePicture) {
  // The shape's pixels sit in the captioned third of the image, in the captioned color.
  ShapesOptions o;
  o.image_size = 48;
  for (int i = 0; i < 20; ++i) {
    ShapeExample ex = GenerateShape(9, i, o);
    double sx = 0, sy = 0, n = 0;
    for (int y = 0; y < 48; ++y)
      for (int x = 0; x < 48; ++x) {
        // Background channels stay under 75; every shape color has one channel over 150.
        int m = std::max({ex.image.at(y, x, 0), ex.image.at(y, x, 1), ex.image.at(y, x, 2)});
        if (m > 120) sx += x, sy += y, n += 1;
      }
    ASSERT_GT(n, 0) << ex.caption;
    const int col = static_cast<int>(sx / n / 16), row = static_cast<int>(sy / n / 16);
    const char* rows[] = {"top", "middle", "bottom"};
    const char* cols[] = {"left", "center", "right"};
    if (row == 1 && col == 1) {
      EXPECT_NE(ex.caption.find("in the center"), std::string::npos) << ex.caption;
    } else {
      EXPECT_NE(ex.caption.find(std::string("at the ") + rows[row] + " " + cols[col]),
                std::string::npos)
          << ex.caption;
    }
  }
}

TEST(Tokenizer, ShippedModelEncodesCaptions) {
  auto tok = LoadTokenizer();
  EXPECT_LE(tok->vocab_size(), 512);  // fits clip-tiny's text vocabulary
  std::vector<int64_t> ids = tok->Encode("a small red circle at the top left", 16);
  ASSERT_EQ(ids.size(), 16u);
  EXPECT_EQ(ids[0], tok->bos_id());
  const int len = tok->EncodedLength("a small red circle at the top left", 16);
  EXPECT_EQ(ids[len - 1], tok->eos_id());
  for (int i = len; i < 16; ++i)
    EXPECT_EQ(ids[i], tok->pad_id());
  EXPECT_EQ(tok->Decode(ids), "a small red circle at the top left");
  // Every caption word is a piece of its own: no unknown pieces in the corpus.
  std::vector<int64_t> a = tok->Encode("a large white cross in the center", 16);
  EXPECT_EQ(tok->Decode(a), "a large white cross in the center");
  // Too long: cut, eos kept last.
  std::vector<int64_t> cut = tok->Encode("a small red circle at the top left", 4);
  EXPECT_EQ(cut.back(), tok->eos_id());
}

// The shipped model strips leading white space (TrainTokenizer's default), so both dummy-prefix
// rules give a text with leading spaces the ids of the text without them.
TEST(Tokenizer, LeadingSpacesOfAStrippingModelMeanNothingUnderEitherRule) {
  auto tok = LoadTokenizer();
  auto sp = Tokenizer::Load(ShippedTokenizer(), DummyPrefix::kSentencepiece);
  ASSERT_TRUE(sp.ok()) << sp.status();
  const std::string text = "a red circle";
  for (const std::string& spaced : {" " + text, "   " + text}) {
    EXPECT_EQ(tok->Encode(spaced, 16), tok->Encode(text, 16)) << "[" << spaced << "]";
    EXPECT_EQ(sp->Encode(spaced, 16), tok->Encode(text, 16)) << "[" << spaced << "]";
  }
}

TEST(Tokenizer, TrainingIsDeterministicAndMatchesTheShippedModel) {
  TempDir dir("tok");
  TokenizerTrainOptions o;
  ASSERT_TRUE(TrainTokenizer(AllShapeCaptions(), o, dir / "a.model").ok());
  auto a = Tokenizer::Load(dir / "a.model");
  ASSERT_TRUE(a.ok()) << a.status();
  auto shipped = LoadTokenizer();
  for (const std::string& c : {std::string("a small red circle at the top left"),
                               std::string("a large purple triangle at the bottom center")}) {
    EXPECT_EQ(a->Encode(c, 16), shipped->Encode(c, 16)) << c;
  }
  EXPECT_FALSE(Tokenizer::Load(dir / "missing.model").ok());
  WriteFile(dir / "bad.model", "not a model");
  auto bad = Tokenizer::Load(dir / "bad.model");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.model"), std::string::npos);
}

void ExpectSameExamples(const ExampleSource& src, int n) {
  ASSERT_EQ(src.size(), n);
  for (int i = 0; i < n; ++i) {
    auto ex = src.Get(i);
    ASSERT_TRUE(ex.ok()) << ex.status();
    ShapeExample want = GenerateShape(7, i, SmallShapes());
    EXPECT_EQ(ex->caption, want.caption);  // trailing newline trimmed
    EXPECT_EQ(ex->image.width, 24);
    if (i % 2 == 0) {
      EXPECT_EQ(ex->image.pixels, want.image.pixels);  // PNG is lossless
    }
  }
}

TEST(ExampleSource, ReadsAFolder) {
  TempDir dir("folder");
  for (const ShardFile& f : ShapeFiles(6, true))
    WriteFile(dir / ("sub/" + f.name), f.bytes);
  DataSourceOptions o;
  o.want_audio = true;
  auto src = OpenDataSource(dir.path(), o);
  ASSERT_TRUE(src.ok()) << src.status();
  ExpectSameExamples(**src, 6);
  auto ex = (*src)->Get(1);
  ASSERT_TRUE(ex.ok());
  EXPECT_EQ(ex->audio.sample_rate, 16000);
  EXPECT_FALSE(ex->audio.samples.empty());
}

TEST(ExampleSource, ReadsATarShardAndAFolderOfShards) {
  TempDir dir("tar");
  auto files = ShapeFiles(6, false);
  ASSERT_TRUE(WriteTarShard(dir / "shard-000.tar", files).ok());
  auto src = OpenDataSource(dir / "shard-000.tar", {});
  ASSERT_TRUE(src.ok()) << src.status();
  ExpectSameExamples(**src, 6);
  EXPECT_NE((*src)->Describe().find("6 examples"), std::string::npos);

  // Two shards in a folder; a third, empty one is reported by name and skipped or stops.
  TempDir shards("shards");
  ASSERT_TRUE(WriteTarShard(shards / "a.tar", {files.begin(), files.begin() + 6}).ok());
  ASSERT_TRUE(WriteTarShard(shards / "b.tar", {files.begin() + 6, files.end()}).ok());
  ASSERT_TRUE(WriteTarShard(shards / "c.tar", {{"readme.md", "nothing here"}}).ok());
  std::vector<std::string> warnings;
  DataSourceOptions skip;
  skip.on_bad_data = BadDataPolicy::kSkip;
  skip.warn = [&](const std::string& w) { warnings.push_back(w); };
  auto both = OpenDataSource(shards.path(), skip);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ((*both)->size(), 6);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("c.tar: empty shard"), std::string::npos) << warnings[0];
  auto stop = OpenDataSource(shards.path(), {});
  ASSERT_FALSE(stop.ok());
  EXPECT_NE(stop.status().message().find("c.tar: empty shard"), std::string::npos);

  // A lone empty shard, a missing path, a file that is no tar.
  auto empty = OpenDataSource(shards / "c.tar", skip);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("c.tar: empty shard"), std::string::npos);
  EXPECT_FALSE(OpenDataSource(dir / "nope.tar", {}).ok());
  WriteFile(dir / "junk.tar", std::string(3000, 'x'));
  auto junk = OpenDataSource(dir / "junk.tar", {});
  ASSERT_FALSE(junk.ok());
  EXPECT_NE(junk.status().message().find("junk.tar"), std::string::npos);
}

TEST(ExampleSource, TruncatedShardKeepsWhatWasReadUnderSkip) {
  TempDir dir("trunc");
  ASSERT_TRUE(WriteTarShard(dir / "s.tar", ShapeFiles(8, false)).ok());
  std::string bytes = testing::ReadFile(dir / "s.tar");
  WriteFile(dir / "cut.tar", bytes.substr(0, bytes.size() / 2 + 100));
  DataSourceOptions skip;
  skip.on_bad_data = BadDataPolicy::kSkip;
  std::vector<std::string> warnings;
  skip.warn = [&](const std::string& w) { warnings.push_back(w); };
  auto src = OpenDataSource(dir / "cut.tar", skip);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_GT((*src)->size(), 0);
  EXPECT_LT((*src)->size(), 8);
  ASSERT_FALSE(warnings.empty());
  EXPECT_NE(warnings[0].find("cut.tar"), std::string::npos) << warnings[0];
  auto stop = OpenDataSource(dir / "cut.tar", {});
  ASSERT_FALSE(stop.ok());
  EXPECT_NE(stop.status().message().find("cut.tar"), std::string::npos);
}

// A folder with three good pairs, an unreadable image, and an image without caption.
void WriteBrokenFolder(const TempDir& dir) {
  auto files = ShapeFiles(3, false);
  for (const ShardFile& f : files)
    WriteFile(dir / f.name, f.bytes);
  WriteFile(dir / "broken.jpg", std::string("\xFF\xD8\xFF\xE0 not really a jpeg", 22));
  WriteFile(dir / "broken.txt", "a small red circle at the top left");
  WriteFile(dir / "lonely.png", *EncodePng(GenerateShape(1, 1, SmallShapes()).image));
}

TEST(DataLoader, BrokenDataIsReportedByFileAndSkippedOrStops) {
  TempDir dir("broken");
  WriteBrokenFolder(dir);
  auto tok = LoadTokenizer();
  std::shared_ptr<const ExampleSource> src = *OpenDataSource(dir.path(), {});
  ASSERT_EQ(src->size(), 5);

  LoaderOptions o;
  o.batch_size = 3;
  o.image_size = 16;
  o.seq_len = 16;
  o.shuffle = false;
  o.on_bad_data = BadDataPolicy::kSkip;
  std::vector<std::string> warnings;
  std::mutex mu;
  o.warn = [&](const std::string& w) {
    std::lock_guard<std::mutex> lock(mu);
    warnings.push_back(w);
  };
  {
    DataLoader loader(src, tok, o);
    auto b = loader.Next();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(b->size(), 3);
    EXPECT_EQ(b->images.sizes(), (std::vector<int64_t>{3, 3, 16, 16}));
    EXPECT_EQ(b->skipped, 2);
    for (const std::string& name : b->names)
      EXPECT_NE(name.find("sample"), std::string::npos);
  }
  std::string all;
  for (auto& w : warnings)
    all += w + "\n";
  EXPECT_NE(all.find("broken.jpg: cannot decode JPEG"), std::string::npos) << all;
  EXPECT_NE(all.find("lonely.png: missing caption"), std::string::npos) << all;

  o.on_bad_data = BadDataPolicy::kStop;
  DataLoader stopping(src, tok, o);
  auto b = stopping.Next();
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("broken.jpg"), std::string::npos) << b.status();
  EXPECT_FALSE(stopping.Next().ok());  // stays failed
}

TEST(DataLoader, SeededOrderAndResumablePosition) {
  auto tok = LoadTokenizer();
  std::shared_ptr<const ExampleSource> src = MakeShapesSource(5, 10, SmallShapes());
  LoaderOptions o;
  o.batch_size = 4;
  o.image_size = 24;
  o.seq_len = 16;
  o.seed = 11;
  std::vector<Batch> run;
  {
    DataLoader loader(src, tok, o);
    for (int i = 0; i < 5; ++i)
      run.push_back(*loader.Next());  // crosses two epochs
  }
  // Batches 2.. again from batch 1's position.
  DataLoader resumed(src, tok, o, run[1].next);
  for (int i = 2; i < 5; ++i) {
    auto b = resumed.Next();
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b->names, run[i].names);
    EXPECT_TRUE(torch::equal(b->images, run[i].images));
    EXPECT_TRUE(torch::equal(b->tokens, run[i].tokens));
  }
  // Each epoch is a permutation; epochs differ; the seed matters.
  auto e0 = DataLoader::EpochOrder(10, 11, 0, true), e1 = DataLoader::EpochOrder(10, 11, 1, true);
  EXPECT_EQ(std::set<int64_t>(e0.begin(), e0.end()).size(), 10u);
  EXPECT_NE(e0, e1);
  EXPECT_EQ(e0, DataLoader::EpochOrder(10, 11, 0, true));
  EXPECT_NE(e0, DataLoader::EpochOrder(10, 12, 0, true));
  EXPECT_EQ(run[2].next.epoch, 1);

  // Several decoding threads give the same batches.
  o.workers = 3;
  DataLoader parallel(src, tok, o);
  for (int i = 0; i < 5; ++i) {
    auto b = parallel.Next();
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b->names, run[i].names);
    EXPECT_TRUE(torch::equal(b->images, run[i].images));
    EXPECT_EQ(b->next, run[i].next);
  }
}

TEST(DataLoader, ImagesOfOtherSizesAreResizedAndCropped) {
  Image wide(40, 20);
  for (int y = 0; y < 20; ++y)
    for (int x = 0; x < 40; ++x)
      wide.at(y, x, 0) = x < 20 ? 0 : 255;
  auto t = ImageToTensor(wide, 16);
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{3, 16, 16}));
  EXPECT_NEAR(t.min().item<float>(), -1.0, 1e-5);
  EXPECT_NEAR(t.max().item<float>(), 1.0, 1e-5);
  EXPECT_LT(t[0][8][0].item<float>(), 0);   // left half dark
  EXPECT_GT(t[0][8][15].item<float>(), 0);  // right half bright
}

}  // namespace
}  // namespace mosaic::train
