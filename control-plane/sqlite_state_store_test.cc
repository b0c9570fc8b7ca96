#include "control-plane/sqlite_state_store.h"

#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace ferry::control {
namespace {

std::string FreshPath(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/ferry-store-" + name;
  std::filesystem::remove_all(dir);
  return dir + "/state/ferry.db";
}

TEST(SqliteStateStoreTest, PutGetListDeleteWithRevisions) {
  auto store = SqliteStateStore::Create({.path = FreshPath("basic")});
  ASSERT_TRUE(store.ok()) << store.status();
  StateStore& s = **store;
  EXPECT_EQ(*s.Revision(), 0);
  EXPECT_EQ(*s.Put("functions/a", "A"), 1);
  EXPECT_EQ(*s.Put("functions/b", "B"), 2);
  EXPECT_EQ(*s.Put("functionsX/c", "C"), 3);
  EXPECT_EQ(*s.Put("functions/a", "A2"), 4);
  auto a = s.Get("functions/a");
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ((*a)->value, "A2");
  EXPECT_EQ((*a)->mod_revision, 4);
  EXPECT_FALSE(s.Get("functions/zzz")->has_value());
  auto list = s.List("functions/");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].key, "functions/a");
  EXPECT_EQ((*list)[1].key, "functions/b");
  EXPECT_EQ(*s.Delete("functions/a"), 5);
  EXPECT_EQ(s.List("functions/")->size(), 1u);
  EXPECT_EQ(s.List("")->size(), 2u);
}

TEST(SqliteStateStoreTest, CommitIsAtomicAndValuesAreBinarySafe) {
  auto store = SqliteStateStore::Create({.path = FreshPath("atomic")});
  ASSERT_TRUE(store.ok());
  const std::string binary("a\0b\xff", 4);
  auto rev = (*store)->Commit(
      {Mutation::Put("k1", binary), Mutation::Put("k2", "v2"), Mutation::Delete("missing")});
  ASSERT_TRUE(rev.ok());
  EXPECT_EQ(*rev, 1);  // one commit, one revision
  EXPECT_EQ((*(*store)->Get("k1"))->value, binary);
  EXPECT_EQ((*(*store)->Get("k2"))->mod_revision, 1);
}

TEST(SqliteStateStoreTest, AcknowledgedWritesSurviveReopen) {
  const std::string path = FreshPath("durable");
  {
    auto store = SqliteStateStore::Create({.path = path});
    ASSERT_TRUE(store.ok());
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE((*store)->Put("functions/f" + std::to_string(i), "v" + std::to_string(i)).ok());
    }
    ASSERT_TRUE((*store)->Delete("functions/f3").ok());
    // No clean shutdown work is needed for durability: each Commit was fsync'ed.
  }
  auto reopened = SqliteStateStore::Create({.path = path});
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(*(*reopened)->Revision(), 21);
  auto list = (*reopened)->List("functions/");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 19u);
  EXPECT_EQ((*(*reopened)->Get("functions/f7"))->value, "v7");
  EXPECT_FALSE((*reopened)->Get("functions/f3")->has_value());
}

TEST(SqliteStateStoreTest, UnwritablePathIsAnError) {
  auto store = SqliteStateStore::Create({.path = "/proc/ferry-cannot-write/ferry.db"});
  EXPECT_FALSE(store.ok());
}

}  // namespace
}  // namespace ferry::control
