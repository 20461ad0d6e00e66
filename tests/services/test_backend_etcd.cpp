// Placeholder: the etcd backend's tests are being written.
#include <gtest/gtest.h>

TEST(Backend, NotBuiltYet) { GTEST_SKIP() << "the etcd backend is not built yet"; }
