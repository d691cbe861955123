#include "interop/clip_tokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <climits>
#include <sstream>

#include "core/file_io.h"
#include "core/json_reader.h"

namespace mosaic::interop {

namespace {

const char* const kBos = "<|startoftext|>";
const char* const kEos = "<|endoftext|>";

void AppendUtf8(UChar32 c, std::string* out) {
  icu::UnicodeString(c).toUTF8String(*out);
}

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to 256 + n.
std::vector<std::string> ByteSymbols() {
  std::vector<int> printable;
  for (int b = '!'; b <= '~'; ++b)
    printable.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b)
    printable.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b)
    printable.push_back(b);
  std::vector<std::string> out(256);
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool keep = std::find(printable.begin(), printable.end(), b) != printable.end();
    AppendUtf8(keep ? b : 256 + n++, &out[b]);
  }
  return out;
}

bool IsLetter(UChar32 c) {
  const int8_t t = u_charType(c);
  return t == U_UPPERCASE_LETTER || t == U_LOWERCASE_LETTER || t == U_TITLECASE_LETTER ||
         t == U_MODIFIER_LETTER || t == U_OTHER_LETTER;
}
bool IsNumber(UChar32 c) {
  const int8_t t = u_charType(c);
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}
bool IsSpace(UChar32 c) {
  return u_hasBinaryProperty(c, UCHAR_WHITE_SPACE);
}

// NFC, white-space runs -> " ", per-code-point full lowercase (as tokenizers' normalizers).
std::vector<UChar32> Normalize(const std::string& text) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  icu::UnicodeString s = icu::UnicodeString::fromUTF8(text);
  if (U_SUCCESS(status)) {
    icu::UnicodeString n = nfc->normalize(s, status);
    if (U_SUCCESS(status)) s = n;
  }
  std::vector<UChar32> out;
  bool in_space = false;
  for (int32_t i = 0; i < s.length();) {
    const UChar32 c = s.char32At(i);
    i += U16_LENGTH(c);
    if (IsSpace(c)) {
      if (!in_space) out.push_back(' ');
      in_space = true;
      continue;
    }
    in_space = false;
    if (c == 0x130) {  // the one unconditional multi-code-point lowercase mapping
      out.push_back('i');
      out.push_back(0x307);
    } else {
      out.push_back(u_tolower(c));
    }
  }
  return out;
}

std::string Utf8(const std::vector<UChar32>& cs, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i)
    AppendUtf8(cs[i], &out);
  return out;
}

// CLIP's pre-tokenizer pattern, leftmost-first alternation at each position; unmatched
// characters (white space) are dropped.
std::vector<std::string> PreTokenize(const std::vector<UChar32>& cs) {
  std::vector<std::string> pieces;
  const size_t n = cs.size();
  auto starts_with = [&](size_t i, const char* lit) {
    for (size_t k = 0; lit[k]; ++k)
      if (i + k >= n || cs[i + k] != static_cast<UChar32>(lit[k])) return size_t{0};
    return std::char_traits<char>::length(lit);
  };
  size_t i = 0;
  while (i < n) {
    size_t len = 0;
    // The pattern's <|startoftext|> / <|endoftext|> alternatives (lowercased special text that
    // was not cut out first) come out as three pieces: ByteLevel's GPT-2 pattern, applied after
    // CLIP's, splits them into "<|", the letters and "|>". It leaves every other piece whole.
    for (const char* lit : {kBos, kEos}) {
      if ((len = starts_with(i, lit))) {
        pieces.push_back("<|");
        pieces.push_back(Utf8(cs, i + 2, i + len - 2));
        pieces.push_back("|>");
        break;
      }
    }
    if (len) {
      i += len;
      continue;
    }
    for (const char* lit : {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"}) {
      if ((len = starts_with(i, lit))) break;
    }
    if (!len && IsLetter(cs[i])) {
      while (i + len < n && IsLetter(cs[i + len]))
        ++len;
    }
    if (!len && IsNumber(cs[i])) len = 1;
    if (!len && !IsSpace(cs[i])) {
      while (i + len < n && !IsSpace(cs[i + len]) && !IsLetter(cs[i + len]) &&
             !IsNumber(cs[i + len]))
        ++len;
    }
    if (!len) {  // white space: not part of any piece
      ++i;
      continue;
    }
    pieces.push_back(Utf8(cs, i, i + len));
    i += len;
  }
  return pieces;
}

std::string JoinPath(const std::string& folder, const std::string& name) {
  if (folder.empty() || folder.back() == '/') return folder + name;
  return folder + "/" + name;
}

}  // namespace

StatusOr<ClipTokenizer> ClipTokenizer::Load(const std::string& vocab_path,
                                            const std::string& merges_path) {
  ClipTokenizer tok;
  tok.byte_symbol_ = ByteSymbols();
  MOSAIC_ASSIGN_OR_RETURN(Json vocab, LoadJsonFile(vocab_path));
  if (!vocab.is_object()) return InvalidArgument(vocab_path + ": expected {\"token\": id, ...}");
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      return InvalidArgument(vocab_path + ": \"" + token + "\": expected a non-negative id");
    tok.vocab_[token] = id.get<int64_t>();
    tok.tokens_[id.get<int64_t>()] = token;
  }
  for (const char* special : {kBos, kEos})
    if (!tok.vocab_.count(special))
      return InvalidArgument(vocab_path + ": the vocab has no " + special);
  tok.bos_id_ = tok.vocab_.at(kBos);
  tok.eos_id_ = tok.vocab_.at(kEos);
  MOSAIC_ASSIGN_OR_RETURN(std::string merges, ReadTextFile(merges_path));
  std::istringstream in(merges);
  std::string line;
  int line_no = 0, rank = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos)
      return InvalidArgument(merges_path + ": line " + std::to_string(line_no) +
                             ": expected two symbols separated by one space");
    tok.ranks_.emplace(std::make_pair(line.substr(0, space), line.substr(space + 1)), rank++);
  }
  return tok;
}

StatusOr<ClipTokenizer> ClipTokenizer::LoadFolder(const std::string& folder) {
  return Load(JoinPath(folder, "vocab.json"), JoinPath(folder, "merges.txt"));
}

void ClipTokenizer::Bpe(const std::string& piece, std::vector<int64_t>* out) const {
  std::vector<std::string> word;
  for (unsigned char b : piece)
    word.push_back(byte_symbol_[b]);
  if (word.empty()) return;
  word.back() += "</w>";
  while (word.size() > 1) {
    int best = INT_MAX;
    size_t best_i = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = ranks_.find({word[i], word[i + 1]});
      if (it != ranks_.end() && it->second < best) {
        best = it->second;
        best_i = i;
      }
    }
    if (best == INT_MAX) break;
    const std::string a = word[best_i], b = word[best_i + 1];
    std::vector<std::string> merged;
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == a && word[i + 1] == b) {
        merged.push_back(a + b);
        i += 2;
      } else {
        merged.push_back(word[i]);
        ++i;
      }
    }
    word.swap(merged);
  }
  for (const std::string& s : word) {
    auto it = vocab_.find(s);
    out->push_back(it != vocab_.end() ? it->second : unk_id());
  }
}

std::string ClipTokenizer::Decode(const std::vector<int64_t>& ids) const {
  std::string symbols;
  for (int64_t id : ids) {
    if (id == bos_id_ || id == eos_id_) continue;
    auto it = tokens_.find(id);
    if (it != tokens_.end()) symbols += it->second;
  }
  // "</w>" ends a word: a space. Then each symbol back to its byte.
  std::string spaced;
  for (size_t i = 0; i < symbols.size();) {
    if (symbols.compare(i, 4, "</w>") == 0) {
      spaced += ' ';
      i += 4;
    } else {
      spaced += symbols[i++];
    }
  }
  std::unordered_map<std::string, char> to_byte;
  for (int b = 0; b < 256; ++b)
    to_byte[byte_symbol_[b]] = static_cast<char>(b);
  std::string out;
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(spaced);
  for (int32_t i = 0; i < u.length();) {
    const UChar32 c = u.char32At(i);
    i += U16_LENGTH(c);
    std::string sym;
    AppendUtf8(c, &sym);
    auto it = to_byte.find(sym);
    out += it != to_byte.end() ? std::string(1, it->second) : sym;
  }
  const size_t first = out.find_first_not_of(' ');
  if (first == std::string::npos) return "";
  return out.substr(first, out.find_last_not_of(' ') - first + 1);
}

std::vector<std::string> ClipTokenizer::Pieces(const std::string& text) const {
  return PreTokenize(Normalize(text));
}

std::vector<int64_t> ClipTokenizer::EncodeIds(const std::string& text) const {
  std::vector<int64_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    // The next special token in the raw text (matched before normalization, case-sensitive).
    size_t next = std::string::npos, len = 0;
    int64_t id = -1;
    for (const char* special : {kBos, kEos}) {
      const size_t at = text.find(special, pos);
      if (at != std::string::npos && at < next) {
        next = at;
        len = std::char_traits<char>::length(special);
        id = special == kBos ? bos_id_ : eos_id_;
      }
    }
    const std::string chunk =
        text.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    for (const std::string& piece : Pieces(chunk))
      Bpe(piece, &ids);
    if (next == std::string::npos) break;
    ids.push_back(id);
    pos = next + len;
  }
  return ids;
}

std::vector<int64_t> ClipTokenizer::Encode(const std::string& text, int seq_len) const {
  std::vector<int64_t> ids = EncodeIds(text);
  const size_t room = seq_len >= 2 ? static_cast<size_t>(seq_len - 2) : 0;
  if (ids.size() > room) ids.resize(room);
  std::vector<int64_t> out;
  out.reserve(std::max(seq_len, 2));
  out.push_back(bos_id_);
  out.insert(out.end(), ids.begin(), ids.end());
  out.push_back(eos_id_);
  while (static_cast<int>(out.size()) < seq_len)
    out.push_back(pad_id());
  return out;
}

}  // namespace mosaic::interop
