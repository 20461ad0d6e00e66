// MirrorRing's window (bridge/links/mirror_ring.hpp): the messages a mirror
// link sent to Kafka or RabbitMQ and that are not yet confirmed, in
// sequence order (suite `unit`, no ring, no server):
//   confirmationsInOrder...  each confirmation found where it was sent, the
//                            window empties from the front as they come,
//                            through the window's growth past its first
//                            capacity (1,024) several times over
//   outOfOrder...            a confirmation of a later message leaves
//                            nothing until the ones before it are done; a
//                            repeated one counts once; an unknown sequence
//                            is not found
//   forgetWindow...          a new producer starts with an empty window,
//                            and sequences sent after it are found again
#include <gtest/gtest.h>

#include <cstdint>

#include "links/mirror_ring.hpp"

namespace colo::bridge {
namespace {

TEST(MirrorWindow, confirmationsInOrderFindEachMessageAndEmptyTheWindowThroughGrowth) {
  MirrorRing ring(false);
  constexpr std::uint64_t kFirst = 1000, kCount = 10'000;  // past 1,024 x 8
  for (std::uint64_t seq = kFirst; seq < kFirst + kCount; ++seq) ring.sent(seq, 64);
  EXPECT_EQ(ring.window_size(), kCount);
  EXPECT_EQ(ring.pending(), kCount);
  EXPECT_EQ(ring.pending_bytes(), kCount * 64);
  EXPECT_EQ(ring.confirmed_below(), kFirst);
  for (std::uint64_t seq = kFirst; seq < kFirst + kCount; ++seq) {
    const auto index = ring.find(seq);
    ASSERT_TRUE(index.has_value()) << seq;
    ASSERT_EQ(*index, 0u) << seq;  // the ones before it left
    ASSERT_EQ(ring.in_flight(*index).seq, seq);
    ASSERT_EQ(ring.done(*index), 1u) << seq;
  }
  EXPECT_EQ(ring.window_size(), 0u);
  EXPECT_EQ(ring.pending(), 0u);
  EXPECT_EQ(ring.pending_bytes(), 0u);
}

TEST(MirrorWindow, outOfOrderConfirmationsLeaveOnlyOnceThoseBeforeThemAreDone) {
  MirrorRing ring(false);
  for (std::uint64_t seq = 0; seq < 3000; ++seq) ring.sent(seq, 10);
  // Every odd one first: nothing leaves (message 0 is not done).
  for (std::uint64_t seq = 1; seq < 3000; seq += 2) {
    const auto index = ring.find(seq);
    ASSERT_TRUE(index.has_value()) << seq;
    ASSERT_EQ(*index, seq);
    ASSERT_EQ(ring.done(*index), 0u) << seq;
  }
  EXPECT_EQ(ring.window_size(), 3000u);
  EXPECT_EQ(ring.pending(), 1500u);
  // A repeated confirmation changes nothing.
  EXPECT_EQ(ring.done(*ring.find(1)), 0u);
  EXPECT_EQ(ring.pending(), 1500u);
  EXPECT_FALSE(ring.find(3000).has_value());
  // Message 0 done: it and message 1 leave; then each even one takes the odd one after it.
  EXPECT_EQ(ring.done(*ring.find(0)), 2u);
  EXPECT_EQ(ring.confirmed_below(), 2u);
  for (std::uint64_t seq = 2; seq < 3000; seq += 2) {
    const auto index = ring.find(seq);
    ASSERT_TRUE(index.has_value()) << seq;
    ASSERT_EQ(*index, 0u);
    ASSERT_EQ(ring.done(*index), 2u) << seq;
  }
  EXPECT_EQ(ring.window_size(), 0u);
  EXPECT_EQ(ring.pending(), 0u);
  EXPECT_EQ(ring.pending_bytes(), 0u);
  EXPECT_FALSE(ring.find(0).has_value());
}

TEST(MirrorWindow, forgetWindowStartsEmptyAndFindsWhatIsSentAfter) {
  MirrorRing ring(false);
  for (std::uint64_t seq = 0; seq < 2000; ++seq) ring.sent(seq, 1);
  ring.forget_window();
  EXPECT_EQ(ring.window_size(), 0u);
  EXPECT_EQ(ring.pending(), 0u);
  EXPECT_FALSE(ring.find(5).has_value());
  ring.sent(5, 7);
  ring.sent(6, 7);
  EXPECT_EQ(ring.find(6), std::optional<std::size_t>(1));
  EXPECT_EQ(ring.done(1), 0u);
  EXPECT_EQ(ring.done(0), 2u);
  EXPECT_EQ(ring.pending_bytes(), 0u);
}

}  // namespace
}  // namespace colo::bridge
