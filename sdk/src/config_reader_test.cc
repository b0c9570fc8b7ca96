#include "ferry/config_reader.h"

#include <string>
#include <vector>

#include "ferry/manifest.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using json = nlohmann::json;

TEST(FieldErrorsTest, FormatsWhereFieldAndMessage) {
  FieldErrors errors("m.yaml document 3");
  EXPECT_EQ(std::string(errors.Error("spec.x", "bad").message()), "m.yaml document 3: spec.x: bad");
  EXPECT_EQ(std::string(errors.Error("", "bad").message()), "m.yaml document 3: bad");
  EXPECT_EQ(std::string(errors.Got("spec.x", json("y"), "a number").message()),
            "m.yaml document 3: spec.x: got \"y\", expected a number");
  EXPECT_EQ(std::string(errors.Missing("spec.x", "a number").message()),
            "m.yaml document 3: spec.x: missing, expected a number");
  EXPECT_EQ(errors.Error("a", "b").code(), absl::StatusCode::kInvalidArgument);
}

TEST(FieldReaderTest, ReadsCheckedFields) {
  const json value = json::parse(R"({"n": 4, "f": 2.0, "s": "x", "e": "b", "sub": {"k": 1}})");
  FieldErrors errors("m.yaml");
  absl::StatusOr<FieldReader> r =
      FieldReader::Open(errors, "spec", value, {"n", "f", "s", "e", "sub"});
  ASSERT_TRUE(r.ok()) << r.status();
  int64_t n = 0;
  EXPECT_TRUE(r->Int("n", 1, 10, &n).ok());
  EXPECT_EQ(n, 4);
  int64_t f = 0;
  EXPECT_TRUE(r->Int("f", 1, 10, &f).ok());  // 2.0 reads as an integer
  EXPECT_EQ(f, 2);
  EXPECT_EQ(std::string(r->Int("n", 5, 10, &n).message()),
            "m.yaml: spec.n: got 4, expected an integer in [5, 10]");
  std::string s;
  EXPECT_TRUE(r->String("s", &s).ok());
  EXPECT_EQ(s, "x");
  int e = 0;
  const std::vector<std::pair<std::string_view, int>> table = {{"a", 1}, {"b", 2}};
  EXPECT_TRUE(r->Enum("e", table, &e).ok());
  EXPECT_EQ(e, 2);
  EXPECT_EQ(std::string(r->Enum("s", table, &e).message()),
            "m.yaml: spec.s: got \"x\", expected one of a, b");
  absl::StatusOr<FieldReader> sub = r->Child("sub", {"j"});
  ASSERT_FALSE(sub.ok());
  EXPECT_EQ(std::string(sub.status().message()),
            "m.yaml: spec.sub.k: unknown field (did you mean j?), expected one of j");
  EXPECT_EQ(std::string(r->Missing("absent", "a thing").message()),
            "m.yaml: spec.absent: missing, expected a thing");
}

TEST(FieldReaderTest, UnknownFieldSuggestsNearMiss) {
  const json value = json::parse(R"({"maxBatchSze": 1})");
  absl::StatusOr<FieldReader> r =
      FieldReader::Open(FieldErrors("m.yaml"), "spec.batching", value, {"maxBatchSize"});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("spec.batching.maxBatchSze: unknown field (did you mean maxBatchSize?)"));
}

TEST(SpecLocationTest, FileDocumentOrName) {
  FunctionSpec spec;
  spec.name = "f";
  EXPECT_EQ(SpecLocation(spec), "function 'f'");
  spec.source = "m.yaml";
  EXPECT_EQ(SpecLocation(spec), "m.yaml");
  spec.document = 2;
  EXPECT_EQ(SpecLocation(spec), "m.yaml document 2");
}

// A runtime's config error and a schema error of the same document have the same form.
TEST(ConfigReaderTest, ConfigErrorsNameTheDocumentLikeManifestErrors) {
  const std::string text =
      "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: a}\nspec: {runtime: echo}\n"
      "---\n"
      "apiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: b}\n"
      "spec: {runtime: echo, config: {delayMicros: -1, shape: [2, 0], extra: 1}}\n";
  absl::StatusOr<std::vector<FunctionSpec>> fns = ParseManifests(text, "m.yaml", "");
  ASSERT_TRUE(fns.ok()) << fns.status();
  ASSERT_EQ(fns->size(), 2u);
  const FunctionSpec& b = (*fns)[1];
  EXPECT_EQ(b.document, 2);
  EXPECT_EQ(std::string(config::GetInt(b, "delayMicros", 0, 0, 10).status().message()),
            "m.yaml document 2: spec.config.delayMicros: expected an integer in [0, 10], got -1");
  EXPECT_EQ(std::string(config::GetDims(b, "shape", {}).status().message()),
            "m.yaml document 2: spec.config.shape[1]: expected an integer >= 1 or -1, got "
            "number 0");
  EXPECT_EQ(std::string(config::CheckKeys(b, {"delayMicros", "shape"}).message()),
            "m.yaml document 2: spec.config.extra: unknown key for runtime 'echo'; expected one "
            "of: delayMicros, shape");

  const std::string bad_schema =
      text +
      "---\napiVersion: ferry.dev/v1\nkind: Function\nmetadata: {name: c}\n"
      "spec: {runtime: echo, batching: {maxBatchSize: 0}}\n";
  absl::StatusOr<std::vector<FunctionSpec>> bad = ParseManifests(bad_schema, "m.yaml", "");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              StartsWith("m.yaml document 3: spec.batching.maxBatchSize: got 0"));
}

TEST(ConfigReaderTest, ReadersKeepDefaultsAndCheckTypes) {
  FunctionSpec spec;
  spec.name = "f";
  spec.runtime = "echo";
  spec.source = "fn.yaml";
  spec.config = json::parse(R"({"s": 5, "names": ["a", 2], "name": ""})");
  EXPECT_EQ(*config::GetString(spec, "absent", "dflt"), "dflt");
  EXPECT_EQ(std::string(config::GetString(spec, "s", "").status().message()),
            "fn.yaml: spec.config.s: expected a string, got number 5");
  EXPECT_EQ(std::string(config::GetStringList(spec, "names").status().message()),
            "fn.yaml: spec.config.names[1]: expected a string, got number 2");
  EXPECT_EQ(std::string(config::GetName(spec, "name", "x").status().message()),
            "fn.yaml: spec.config.name: expected a non-empty name");
  EXPECT_FALSE(config::GetStringList(spec, "absent")->has_value());
  spec.config = json::array();
  EXPECT_EQ(std::string(config::CheckKeys(spec, {}).message()),
            "fn.yaml: spec.config: expected an object, got array []");
  spec.config = nullptr;
  EXPECT_TRUE(config::CheckKeys(spec, {}).ok());
}

}  // namespace
}  // namespace ferry
