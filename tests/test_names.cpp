// Names and namespaces: what is refused, with which
// error and message, and what is accepted. Also that Node refuses a bad name
// before touching shared memory.
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "colo/names.hpp"
#include "colo/node.hpp"
#include "support.hpp"

namespace colo {
namespace {

using test::NamespaceTest;

struct NameCase {
  const char* label;  // gtest parameter name
  std::string name;
  const char* why;    // expected in the message
};

std::ostream& operator<<(std::ostream& os, const NameCase& c) { return os << c.label; }

// ---------------------------------------------------------------- objects

class RefusesBadObjectName : public ::testing::TestWithParam<NameCase> {};

TEST_P(RefusesBadObjectName, withInvalidArgumentNamingTheProblem) {
  const NameCase& c = GetParam();

  const auto sut = validate_object_name(c.name);

  ASSERT_FALSE(sut.has_value());
  EXPECT_EQ(sut.error().code, Errc::invalid_argument);
  EXPECT_NE(sut.error().message.find("invalid object name"), std::string::npos) << sut.error().message;
  EXPECT_NE(sut.error().message.find(c.why), std::string::npos) << sut.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Names, RefusesBadObjectName,
    ::testing::Values(NameCase{"empty", "", "it is empty"},
                      NameCase{"bytes201", std::string(201, 'a'), "201 bytes long"},
                      NameCase{"dotdotComponent", "a/../b", "'..' path component"},
                      NameCase{"dotdotAlone", "..", "'..' path component"},
                      NameCase{"dotComponent", "a/./b", "'.' path component"},
                      NameCase{"dotAlone", ".", "'.' path component"},
                      NameCase{"emptyComponent", "a//b", "empty path component"},
                      NameCase{"nulInside", std::string("ab\0cd", 5), "byte 0x00 at offset 2"},
                      NameCase{"leadingSlash", "/a", "starts or ends with '/'"},
                      NameCase{"trailingSlash", "a/", "starts or ends with '/'"},
                      NameCase{"nonUtf8Byte", "a\xff", "byte 0xff at offset 1"},
                      NameCase{"utf8NonAscii", "caf\xc3\xa9", "byte 0xc3 at offset 3"},
                      NameCase{"space", "a b", "byte 0x20 at offset 1"},
                      NameCase{"caret", "a^b", "byte 0x5e at offset 1"},
                      NameCase{"backslash", "a\\b", "byte 0x5c at offset 1"},
                      NameCase{"newline", "a\nb", "byte 0x0a at offset 1"}),
    [](const ::testing::TestParamInfo<NameCase>& info) { return std::string(info.param.label); });

TEST(ObjectNames, printsUnprintableBytesEscapedInTheMessage) {
  const auto sut = validate_object_name("a\xff");

  ASSERT_FALSE(sut.has_value());
  EXPECT_NE(sut.error().message.find("'a\\xff'"), std::string::npos) << sut.error().message;
}

class AcceptsGoodObjectName : public ::testing::TestWithParam<NameCase> {};

TEST_P(AcceptsGoodObjectName, asValid) {
  const auto sut = validate_object_name(GetParam().name);

  EXPECT_TRUE(sut.has_value()) << sut.error().message;
}

INSTANTIATE_TEST_SUITE_P(Names, AcceptsGoodObjectName,
                         ::testing::Values(NameCase{"bytes200", std::string(200, 'a'), ""},
                                           NameCase{"allCharacterClasses", "a/b.c-d_e", ""},
                                           NameCase{"oneByte", "x", ""},
                                           NameCase{"dotsInsideComponent", "a..b/.c/d.", ""},
                                           NameCase{"digitsAndUpper", "Orders/2024/Q1", ""}),
                         [](const ::testing::TestParamInfo<NameCase>& info) { return std::string(info.param.label); });

// ------------------------------------------------------------- namespaces

class RefusesBadNamespace : public ::testing::TestWithParam<NameCase> {};

TEST_P(RefusesBadNamespace, withInvalidArgumentNamingTheProblem) {
  const NameCase& c = GetParam();

  const auto sut = validate_namespace(c.name);

  ASSERT_FALSE(sut.has_value());
  EXPECT_EQ(sut.error().code, Errc::invalid_argument);
  EXPECT_NE(sut.error().message.find("invalid namespace"), std::string::npos) << sut.error().message;
  EXPECT_NE(sut.error().message.find(c.why), std::string::npos) << sut.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Namespaces, RefusesBadNamespace,
    ::testing::Values(NameCase{"empty", "", "it is empty"},
                      NameCase{"bytes33", std::string(33, 'n'), "33 bytes long"},
                      NameCase{"dot", "a.b", "outside the allowed set"},
                      NameCase{"slash", "a/b", "outside the allowed set"},
                      NameCase{"space", "a b", "outside the allowed set"},
                      NameCase{"nonUtf8Byte", "ns\xff", "outside the allowed set"},
                      NameCase{"nulInside", std::string("a\0b", 3), "outside the allowed set"},
                      NameCase{"dotdot", "..", "outside the allowed set"}),
    [](const ::testing::TestParamInfo<NameCase>& info) { return std::string(info.param.label); });

class AcceptsGoodNamespace : public ::testing::TestWithParam<NameCase> {};

TEST_P(AcceptsGoodNamespace, asValid) {
  const auto sut = validate_namespace(GetParam().name);

  EXPECT_TRUE(sut.has_value()) << sut.error().message;
}

INSTANTIATE_TEST_SUITE_P(Namespaces, AcceptsGoodNamespace,
                         ::testing::Values(NameCase{"bytes32", std::string(32, 'n'), ""},
                                           NameCase{"allCharacterClasses", "Prod-eu_1", ""},
                                           NameCase{"defaultName", "default", ""}),
                         [](const ::testing::TestParamInfo<NameCase>& info) { return std::string(info.param.label); });

// ------------------------------------------------------ through the Node

class NodeNames : public NamespaceTest {};

TEST_F(NodeNames, refusesBadLockNameWithoutCreatingAnySegment) {
  auto node = Node::open(test::node_options(ns));
  ASSERT_TRUE(node) << node.error().message;
  const auto before = test::namespace_files(ns);

  for (const std::string& bad : std::vector<std::string>{"a//b", "../x", "a b", std::string("a\0b", 3), std::string(201, 'a')}) {
    auto sut = node->lock(bad);

    ASSERT_FALSE(sut.has_value()) << "accepted '" << bad << "'";
    EXPECT_EQ(sut.error().code, Errc::invalid_argument);
  }
  EXPECT_EQ(test::namespace_files(ns), before);  // only the registry
}

TEST_F(NodeNames, acceptsLongestLockNameAndNestedNames) {
  auto node = Node::open(test::node_options(ns));
  ASSERT_TRUE(node) << node.error().message;

  auto longest = node->lock(std::string(200, 'a'));
  auto nested = node->lock("a/b.c-d_e");

  ASSERT_TRUE(longest) << longest.error().message;
  ASSERT_TRUE(nested) << nested.error().message;
  EXPECT_TRUE(test::file_exists("/dev/shm/colo." + ns + ".obj.a^b.c-d_e"));
  EXPECT_EQ(nested->name(), "a/b.c-d_e");
}

TEST(NodeNamespaces, refusesBadNamespaceWithoutCreatingAnything) {
  for (const std::string& bad : std::vector<std::string>{"", "a.b", "a/b", std::string(33, 'n')}) {
    auto sut = Node::open(test::node_options(bad));

    ASSERT_FALSE(sut.has_value()) << "accepted namespace '" << bad << "'";
    EXPECT_EQ(sut.error().code, Errc::invalid_argument);
    EXPECT_NE(sut.error().message.find("invalid namespace"), std::string::npos) << sut.error().message;
  }
}

}  // namespace
}  // namespace colo
