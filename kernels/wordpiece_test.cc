#include "kernels/wordpiece.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A tiny vocabulary; the full check against the reference library over the real vocabulary is
// tests/reference/compare_tokenizer.py.
std::unique_ptr<WordPieceTokenizer> Make(int max_seq_length = 64) {
  std::vector<std::string> tokens = {
      "[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "hello", "!", ",",
      "cafe",  "naive", "中",    "国",    "a",  "##a",   "resume", "i",     "¿", "x"};
  WordPieceTokenizer::Options options;
  options.vocab_path = "test-vocab";
  options.max_seq_length = max_seq_length;
  absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> t =
      WordPieceTokenizer::FromTokens(tokens, options);
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

// Tokens of `text` as strings, [CLS]/[SEP] included.
std::vector<std::string> Pieces(const WordPieceTokenizer& t, std::string_view text) {
  std::vector<int32_t> ids;
  absl::Status s = t.Encode(text, &ids);
  EXPECT_TRUE(s.ok()) << s;
  std::vector<std::string> out;
  for (int32_t id : ids) out.emplace_back(t.Token(id));
  return out;
}

TEST(WordPieceTest, GreedyLongestMatchWithContinuationPrefix) {
  auto t = Make();
  EXPECT_THAT(Pieces(*t, "unaffable"), ElementsAre("[CLS]", "un", "##aff", "##able", "[SEP]"));
  EXPECT_THAT(Pieces(*t, "aaa"), ElementsAre("[CLS]", "a", "##a", "##a", "[SEP]"));
}

TEST(WordPieceTest, WordWithAnUnmatchablePartIsOneUnk) {
  auto t = Make();
  EXPECT_THAT(Pieces(*t, "unaffz hello"), ElementsAre("[CLS]", "[UNK]", "hello", "[SEP]"));
}

TEST(WordPieceTest, LowerCasesStripsAccentsAndSplitsPunctuation) {
  auto t = Make();
  EXPECT_THAT(Pieces(*t, "HELLO,Café!"), ElementsAre("[CLS]", "hello", ",", "cafe", "!", "[SEP]"));
  // Decomposed input (e + combining acute) and a precomposed one agree.
  EXPECT_THAT(Pieces(*t, "Re\xCC\x81sume\xCC\x81 NAÏVE"),
              ElementsAre("[CLS]", "resume", "naive", "[SEP]"));
  // Unicode punctuation (category Po) splits too.
  EXPECT_THAT(Pieces(*t, "¿hello"), ElementsAre("[CLS]", "¿", "hello", "[SEP]"));
  // U+0130 (I with dot above) strips to i.
  EXPECT_THAT(Pieces(*t, "\xC4\xB0"), ElementsAre("[CLS]", "i", "[SEP]"));
}

TEST(WordPieceTest, CjkIdeographsAreWordsOfTheirOwn) {
  auto t = Make();
  EXPECT_THAT(Pieces(*t, "hello中国hello"),
              ElementsAre("[CLS]", "hello", "中", "国", "hello", "[SEP]"));
}

TEST(WordPieceTest, CleansControlCharactersAndWhitespace) {
  auto t = Make();
  // NUL, U+FFFD, BEL and a zero-width space (Cf) vanish; tab, newline and NBSP separate words.
  EXPECT_THAT(Pieces(*t, std::string("hel\0lo", 6)), ElementsAre("[CLS]", "hello", "[SEP]"));
  EXPECT_THAT(Pieces(*t, "hel\xEF\xBF\xBDlo\x07"), ElementsAre("[CLS]", "hello", "[SEP]"));
  EXPECT_THAT(Pieces(*t, "hel\xE2\x80\x8Blo"), ElementsAre("[CLS]", "hello", "[SEP]"));
  EXPECT_THAT(Pieces(*t, "a\tb\nhello\xC2\xA0x"),
              ElementsAre("[CLS]", "a", "[UNK]", "hello", "x", "[SEP]"));
}

TEST(WordPieceTest, EmptyAndWhitespaceOnlyTexts) {
  auto t = Make();
  EXPECT_THAT(Pieces(*t, ""), ElementsAre("[CLS]", "[SEP]"));
  EXPECT_THAT(Pieces(*t, " \t\n "), ElementsAre("[CLS]", "[SEP]"));
}

TEST(WordPieceTest, WordsOverOneHundredCharactersAreUnk) {
  auto t = Make(/*max_seq_length=*/200);
  EXPECT_EQ(Pieces(*t, std::string(100, 'a')).size(), 102u);  // [CLS] a ##a x99 [SEP]
  EXPECT_THAT(Pieces(*t, std::string(101, 'a')), ElementsAre("[CLS]", "[UNK]", "[SEP]"));
}

TEST(WordPieceTest, TruncatesToMaxSeqLength) {
  auto t = Make(/*max_seq_length=*/5);
  EXPECT_THAT(Pieces(*t, "hello hello hello hello hello"),
              ElementsAre("[CLS]", "hello", "hello", "hello", "[SEP]"));
  // Truncation may cut a word's pieces.
  EXPECT_THAT(Pieces(*t, "x unaffable"), ElementsAre("[CLS]", "x", "un", "##aff", "[SEP]"));
}

TEST(WordPieceTest, RejectsInvalidUtf8NamingTheByte) {
  auto t = Make();
  std::vector<int32_t> ids;
  absl::Status s = t->Encode("ok\xC3(", &ids);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("byte 2"));
  EXPECT_FALSE(t->Encode("\xED\xA0\x80", &ids).ok());      // a surrogate
  EXPECT_FALSE(t->Encode("\xC0\xAF", &ids).ok());          // overlong
  EXPECT_FALSE(t->Encode("\xF4\x90\x80\x80", &ids).ok());  // past U+10FFFF
  size_t bad = 0;
  EXPECT_FALSE(IsValidUtf8("ab\xFF", &bad));
  EXPECT_EQ(bad, 2u);
  EXPECT_TRUE(IsValidUtf8("h\xC3\xA9llo \xF0\x9F\x98\x80"));
}

TEST(WordPieceTest, VocabularyErrors) {
  WordPieceTokenizer::Options options;
  options.vocab_path = "v.txt";
  EXPECT_THAT(
      WordPieceTokenizer::FromTokens({"[PAD]", "[UNK]", "[CLS]"}, options).status().message(),
      HasSubstr("no [SEP]"));
  EXPECT_THAT(WordPieceTokenizer::FromTokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[UNK]"}, options)
                  .status()
                  .message(),
              HasSubstr("line 5: duplicate token '[UNK]'"));
  options.vocab_path = "/nonexistent/vocab.txt";
  EXPECT_THAT(WordPieceTokenizer::Create(options).status().message(),
              HasSubstr("/nonexistent/vocab.txt"));
}

}  // namespace
}  // namespace ferry::kernels
