// Placeholder: the redis backend's tests are being written.
#include <gtest/gtest.h>

TEST(Backend, NotBuiltYet) { GTEST_SKIP() << "the redis backend is not built yet"; }
