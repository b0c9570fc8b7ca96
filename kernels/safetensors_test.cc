#include "kernels/safetensors.h"

#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/test_safetensors_writer.h"

namespace ferry::kernels {
namespace {

using ::ferry::kernels::testing::FloatBytes;
using ::ferry::kernels::testing::SafetensorsBytes;
using ::ferry::kernels::testing::SafetensorsHeader;
using ::ferry::kernels::testing::TestTensor;
using ::ferry::kernels::testing::WriteFile;
using ::testing::HasSubstr;

class SafetensorsTest : public ::testing::Test {
 protected:
  std::string Path(const std::string& name) {
    return ::testing::TempDir() + "/st_" + std::to_string(::getpid()) + "_" + name;
  }

  // Writes `contents` and returns Open's status message (empty when it opened).
  std::string OpenError(const std::string& name, const std::string& contents) {
    const std::string path = Path(name);
    WriteFile(path, contents);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
    ::unlink(path.c_str());  // the mapping, if any, stays valid
    if (file.ok()) return "";
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << file.status();
    EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));
    return std::string(file.status().message());
  }

  std::vector<TestTensor> GoodTensors() {
    return {
        {"a", "F32", {2, 3}, FloatBytes({1, 2, 3, 4, 5, 6})},
        {"b", "I64", {2}, std::string(16, '\x01')},
        {"empty", "F32", {0, 4}, ""},
        {"c", "F16", {2}, std::string("\x00\x3c\x00\xc0", 4)},  // 1.0, -2.0
        {"d", "BF16", {1}, std::string("\x80\x3f", 2)},         // 1.0
    };
  }
};

TEST_F(SafetensorsTest, RoundTrip) {
  const std::string path = Path("good");
  std::vector<TestTensor> tensors = GoodTensors();
  nlohmann::json header = SafetensorsHeader(tensors);
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const TestTensor& t : tensors) data += t.bytes;
  // Trailing spaces pad the header the way the reference writer aligns it.
  WriteFile(path, SafetensorsBytes(header.dump() + "   ", data));

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().size(), 5u);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");

  const SafetensorsTensor* a = (*file)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, "F32");
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->element_count, 6);
  absl::StatusOr<std::vector<float>> av = (*file)->ReadFloat32(*a);
  ASSERT_TRUE(av.ok());
  EXPECT_EQ(*av, (std::vector<float>{1, 2, 3, 4, 5, 6}));

  const SafetensorsTensor* b = (*file)->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ((*file)->Data(*b), std::string(16, '\x01'));
  EXPECT_FALSE((*file)->ReadFloat32(*b).ok());

  absl::StatusOr<std::vector<float>> cv = (*file)->ReadFloat32(*(*file)->Find("c"));
  ASSERT_TRUE(cv.ok());
  EXPECT_EQ(*cv, (std::vector<float>{1.0f, -2.0f}));
  absl::StatusOr<std::vector<float>> dv = (*file)->ReadFloat32(*(*file)->Find("d"));
  ASSERT_TRUE(dv.ok());
  EXPECT_EQ(*dv, (std::vector<float>{1.0f}));
  const SafetensorsTensor* empty = (*file)->Find("empty");
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->element_count, 0);
  EXPECT_EQ((*file)->Find("missing"), nullptr);
}

TEST_F(SafetensorsTest, EmptyHeaderObjectIsValid) {
  EXPECT_EQ(OpenError("emptyobj", SafetensorsBytes("{}", "")), "");
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(Path("does_not_exist"));
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, MalformedFilesAreErrors) {
  const std::string good = SafetensorsBytes(GoodTensors());
  const std::string a_data = FloatBytes({1, 2});
  auto one = [&](const std::string& entry_json, const std::string& data) {
    return SafetensorsBytes("{\"t\":" + entry_json + "}", data);
  };

  EXPECT_THAT(OpenError("empty", ""), HasSubstr("shorter than the 8-byte"));
  EXPECT_THAT(OpenError("short", std::string("\x05\x00\x00", 3)), HasSubstr("shorter"));
  EXPECT_THAT(OpenError("hugeheader", std::string("\xff\xff\xff\xff\xff\xff\xff\xff{}", 10)),
              HasSubstr("exceeds"));
  EXPECT_THAT(OpenError("headerpastend", SafetensorsBytes("{}", "").substr(0, 9)),
              HasSubstr("exceeds"));
  EXPECT_THAT(OpenError("notjson", SafetensorsBytes("{not json", "")), HasSubstr("not valid JSON"));
  EXPECT_THAT(OpenError("array", SafetensorsBytes("[1,2]", "")), HasSubstr("JSON object"));
  EXPECT_THAT(OpenError("badutf8", SafetensorsBytes("{\"\xff\":1}", "")),
              HasSubstr("not valid JSON"));
  EXPECT_THAT(OpenError("entrynotobject", one("5", "")), HasSubstr("tensor 't'"));
  EXPECT_THAT(
      OpenError("baddtype", one(R"({"dtype":"F31","shape":[2],"data_offsets":[0,8]})", a_data)),
      HasSubstr("unknown dtype 'F31'"));
  EXPECT_THAT(OpenError("nodtype", one(R"({"shape":[2],"data_offsets":[0,8]})", a_data)),
              HasSubstr("dtype"));
  EXPECT_THAT(OpenError("extrafield",
                        one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1})", a_data)),
              HasSubstr("unknown field 'x'"));
  EXPECT_THAT(
      OpenError("negshape", one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})", a_data)),
      HasSubstr("non-negative"));
  EXPECT_THAT(
      OpenError("floatshape", one(R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})", a_data)),
      HasSubstr("non-negative"));
  EXPECT_THAT(
      OpenError("sizemismatch", one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})", a_data)),
      HasSubstr("needs 12 bytes"));
  EXPECT_THAT(
      OpenError(
          "overflowshape",
          one(R"({"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]})", a_data)),
      HasSubstr("too large"));
  EXPECT_THAT(
      OpenError("offsetspast", one(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})", a_data)),
      HasSubstr("run past the data section"));
  EXPECT_THAT(OpenError("beginafterend",
                        one(R"({"dtype":"F32","shape":[0],"data_offsets":[8,0]})", a_data)),
              HasSubstr("begin > end"));
  EXPECT_THAT(
      OpenError("offsetsshape", one(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})", a_data)),
      HasSubstr("data_offsets"));
  EXPECT_THAT(OpenError("overlap", SafetensorsBytes(
                                       R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                       R"("y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                       std::string(12, '\0'))),
              HasSubstr("overlap"));
  EXPECT_THAT(
      OpenError("gap", SafetensorsBytes(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                        R"("y":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                        std::string(12, '\0'))),
      HasSubstr("gap"));
  EXPECT_THAT(OpenError("trailing",
                        one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", a_data + "xx")),
              HasSubstr("trailing"));
  EXPECT_THAT(OpenError("badmeta", SafetensorsBytes(R"({"__metadata__":{"k":1}})", "")),
              HasSubstr("__metadata__"));

  // Every truncation of a good file fails cleanly.
  for (size_t cut = 0; cut < good.size(); cut += 7) {
    EXPECT_NE(OpenError("trunc", good.substr(0, cut)), "") << "cut at " << cut;
  }
}

TEST_F(SafetensorsTest, UnsortedOffsetsInHeaderAreAccepted) {
  // JSON key order need not follow data order.
  const std::string header = R"({"z":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  const std::string path = Path("unsorted");
  WriteFile(path, SafetensorsBytes(header, FloatBytes({7, 9})));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*(*file)->ReadFloat32(*(*file)->Find("z")), std::vector<float>{7});
  EXPECT_EQ(*(*file)->ReadFloat32(*(*file)->Find("a")), std::vector<float>{9});
}

TEST_F(SafetensorsTest, FromBytesValidatesLikeOpen) {
  std::vector<TestTensor> tensors = GoodTensors();
  std::string data;
  for (const TestTensor& t : tensors) data += t.bytes;
  const std::string good = SafetensorsBytes(SafetensorsHeader(tensors).dump(), data);

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::FromBytes(good, "weights.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->path(), "weights.safetensors");
  EXPECT_EQ((*file)->tensors().size(), tensors.size());
  EXPECT_EQ(*(*file)->ReadFloat32(*(*file)->Find("a")), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ((*file)->Data(*(*file)->Find("b")), std::string(16, '\x01'));

  for (size_t cut = 0; cut < good.size(); cut += 5) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> cut_file =
        SafetensorsFile::FromBytes(good.substr(0, cut), "cut.safetensors");
    ASSERT_FALSE(cut_file.ok()) << "cut at " << cut;
    EXPECT_EQ(cut_file.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(cut_file.status().message()), HasSubstr("'cut.safetensors'"));
    // The same bytes from a file give the same answer.
    EXPECT_EQ(OpenError("cut", good.substr(0, cut)).empty(), false);
  }
}

TEST_F(SafetensorsTest, DirectoryIsRejected) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(::testing::TempDir());
  EXPECT_FALSE(file.ok());
}

}  // namespace
}  // namespace ferry::kernels
