#include "ferry/tensor.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::vector<DataType> kAllTypes = {
    DataType::kBool, DataType::kUint8, DataType::kUint16, DataType::kUint32, DataType::kUint64,
    DataType::kInt8, DataType::kInt16, DataType::kInt32,  DataType::kInt64,  DataType::kFp16,
    DataType::kBf16, DataType::kFp32,  DataType::kFp64,   DataType::kBytes};

TEST(DataType, NameRoundTrip) {
  for (DataType dtype : kAllTypes) {
    const std::string_view name = DataTypeName(dtype);
    EXPECT_NE(name, "INVALID");
    EXPECT_EQ(DataTypeFromName(name), dtype) << name;
  }
  EXPECT_EQ(DataTypeName(DataType::kFp32), "FP32");
  EXPECT_EQ(DataTypeName(DataType::kBytes), "BYTES");
  EXPECT_EQ(DataTypeName(DataType::kBf16), "BF16");
  EXPECT_EQ(DataTypeName(DataType::kInvalid), "INVALID");
}

TEST(DataType, UnknownNamesAreInvalid) {
  EXPECT_EQ(DataTypeFromName("fp32"), DataType::kInvalid);  // the protocol is case-sensitive
  EXPECT_EQ(DataTypeFromName("FLOAT"), DataType::kInvalid);
  EXPECT_EQ(DataTypeFromName(""), DataType::kInvalid);
  EXPECT_EQ(DataTypeFromName("INVALID"), DataType::kInvalid);
}

TEST(DataType, Sizes) {
  EXPECT_EQ(DataTypeSizeBytes(DataType::kBool), 1);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kUint8), 1);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kInt8), 1);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kUint16), 2);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kInt16), 2);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kFp16), 2);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kBf16), 2);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kUint32), 4);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kInt32), 4);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kFp32), 4);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kUint64), 8);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kInt64), 8);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kFp64), 8);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kBytes), 0);
  EXPECT_EQ(DataTypeSizeBytes(DataType::kInvalid), 0);
}

TEST(Shape, ElementCount) {
  EXPECT_EQ(ElementCount({}), 1);  // a scalar
  EXPECT_EQ(ElementCount({2, 3}), 6);
  EXPECT_EQ(ElementCount({4, 0, 7}), 0);
  EXPECT_EQ(ElementCount({2, -1}), -1);
  EXPECT_EQ(ElementCount({-3}), -1);
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(ElementCount({kMax}), kMax);
  EXPECT_EQ(ElementCount({kMax, 2}), -1);
  EXPECT_EQ(ElementCount({int64_t{1} << 32, int64_t{1} << 32}), -1);
  EXPECT_EQ(ElementCount({int64_t{1} << 31, int64_t{1} << 31}), int64_t{1} << 62);
  // A leading zero dimension keeps the product 0 whatever follows.
  EXPECT_EQ(ElementCount({0, kMax, kMax}), 0);
  EXPECT_EQ(ElementCount({kMax, kMax, 0}), 0);
}

TEST(Shape, ToString) {
  EXPECT_EQ(ShapeToString({}), "[]");
  EXPECT_EQ(ShapeToString({2, 3}), "[2,3]");
  EXPECT_EQ(ShapeToString({-1}), "[-1]");
}

TEST(Tensor, CheckConsistentFixedSize) {
  Tensor t{.name = "x", .dtype = DataType::kFp32, .shape = {2, 3}};
  t.data.resize(24);
  EXPECT_TRUE(t.CheckConsistent().ok());
  EXPECT_EQ(t.element_count(), 6);

  t.data.resize(20);
  absl::Status st = t.CheckConsistent();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("tensor 'x'"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("needs 24 bytes, got 20"));

  t.shape = {2, -3};
  st = t.CheckConsistent();
  EXPECT_THAT(std::string(st.message()), HasSubstr("invalid shape [2,-3]"));

  t.shape = {};
  t.dtype = DataType::kInvalid;
  st = t.CheckConsistent();
  EXPECT_THAT(std::string(st.message()), HasSubstr("invalid datatype"));
}

TEST(Tensor, CheckConsistentBytes) {
  Tensor t{.name = "s", .dtype = DataType::kBytes, .shape = {2}};
  t.bytes = {"a", ""};
  EXPECT_TRUE(t.CheckConsistent().ok());
  t.bytes.push_back("c");
  absl::Status st = t.CheckConsistent();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("needs 2 BYTES elements, got 3"));
}

TEST(Tensor, TypedViews) {
  Tensor t{.name = "i", .dtype = DataType::kInt32, .shape = {2}};
  t.data.resize(8);
  t.mutable_as<int32_t>()[0] = -5;
  t.mutable_as<int32_t>()[1] = 7;
  EXPECT_EQ(t.as<int32_t>()[0], -5);
  EXPECT_EQ(t.as<int32_t>()[1], 7);
}

TEST(BytesElements, RoundTrip) {
  const std::vector<std::string> elements = {"hello", "", std::string("a\0b", 3),
                                             std::string(300, 'z')};
  const std::string raw = EncodeBytesElements(elements);
  EXPECT_EQ(raw.size(), 4 * 4 + 5 + 0 + 3 + 300);
  // 4-byte little-endian length prefix.
  EXPECT_EQ(raw.substr(0, 4), std::string("\x05\x00\x00\x00", 4));
  const size_t last = 4 + 5 + 4 + 4 + 3;
  EXPECT_EQ(raw.substr(last, 4), std::string("\x2c\x01\x00\x00", 4));

  auto decoded = DecodeBytesElements(raw, 4, "input");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, elements);

  decoded = DecodeBytesElements(raw, -1, "input");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->size(), 4u);
}

TEST(BytesElements, Empty) {
  EXPECT_EQ(EncodeBytesElements({}), "");
  auto decoded = DecodeBytesElements("", 0, "x");
  ASSERT_TRUE(decoded.ok());
  EXPECT_TRUE(decoded->empty());
}

TEST(BytesElements, TruncationErrors) {
  const std::string raw = EncodeBytesElements({"abc", "defg"});

  auto decoded = DecodeBytesElements(std::string_view(raw).substr(0, 9), -1, "tensor 'q'");
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(decoded.status().message()),
              HasSubstr("tensor 'q': BYTES element 1 has a truncated 4-byte length prefix"));

  decoded = DecodeBytesElements(std::string_view(raw).substr(0, raw.size() - 1), -1, "q");
  ASSERT_FALSE(decoded.ok());
  EXPECT_THAT(std::string(decoded.status().message()),
              HasSubstr("q: BYTES element 1 declares 4 bytes but only 3 remain"));

  // A huge declared length must not be trusted.
  decoded = DecodeBytesElements(std::string("\xff\xff\xff\xff"
                                            "ab",
                                            6),
                                -1, "q");
  ASSERT_FALSE(decoded.ok());
  EXPECT_THAT(std::string(decoded.status().message()), HasSubstr("declares 4294967295 bytes"));
}

TEST(BytesListTest, OneBufferPlusOffsets) {
  BytesList list = {"ab", "", "cde"};
  EXPECT_EQ(list.size(), 3u);
  EXPECT_EQ(list.total_bytes(), 5u);
  EXPECT_EQ(list[0], "ab");
  EXPECT_EQ(list[1], "");
  EXPECT_EQ(list[2], "cde");
  EXPECT_EQ(list.back(), "cde");
  EXPECT_THAT(list, ElementsAre("ab", "", "cde"));
  list.pop_back();
  EXPECT_EQ(list.total_bytes(), 2u);
  list.push_back(std::string_view("x\0y", 3));
  EXPECT_EQ(list[2].size(), 3u);
  EXPECT_EQ(list, (std::vector<std::string>{"ab", "", std::string("x\0y", 3)}));
  EXPECT_EQ(std::vector<std::string>(list.begin(), list.end()), list.ToVector());
  list.clear();
  EXPECT_TRUE(list.empty());
  EXPECT_EQ(list.total_bytes(), 0u);
}

TEST(BytesElements, DeclaredCountBeyondThePayloadIsRefusedBeforeAllocating) {
  // 2^40 elements declared over 8 bytes: at most 2 can be there, so nothing is reserved.
  const std::string raw = EncodeBytesElements({"a", ""});
  auto decoded = DecodeBytesElements(raw, int64_t{1} << 40, "in");
  ASSERT_FALSE(decoded.ok());
  EXPECT_THAT(std::string(decoded.status().message()), HasSubstr("hold at most 2"));
}

TEST(TensorByteSizeTest, OverflowIsMinusOne) {
  EXPECT_EQ(TensorByteSize(DataType::kFp32, {2, 3}), 24);
  EXPECT_EQ(TensorByteSize(DataType::kFp32, {1, int64_t{1} << 62}), -1);
  EXPECT_EQ(TensorByteSize(DataType::kFp64, {int64_t{1} << 61}), -1);
  EXPECT_EQ(TensorByteSize(DataType::kFp32, {-1}), -1);
  Tensor t;
  t.name = "t";
  t.dtype = DataType::kFp32;
  t.shape = {1, int64_t{1} << 62};
  EXPECT_THAT(std::string(t.CheckConsistent().message()), HasSubstr("too large"));
}

TEST(BytesElements, CountMismatch) {
  const std::string raw = EncodeBytesElements({"a", "b", "c"});
  auto decoded = DecodeBytesElements(raw, 2, "in");
  ASSERT_FALSE(decoded.ok());
  EXPECT_THAT(std::string(decoded.status().message()),
              HasSubstr("in: expected 2 BYTES elements, got 3"));
  decoded = DecodeBytesElements(raw, 3, "in");
  ASSERT_TRUE(decoded.ok());
  EXPECT_THAT(*decoded, ElementsAre("a", "b", "c"));
}

}  // namespace
}  // namespace ferry
