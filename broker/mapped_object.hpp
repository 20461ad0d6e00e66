// broker/mapped_object.hpp — keeps an object's segment mapped (private).
#pragma once

#include "segment.hpp"

namespace colo::detail {

// Public headers only forward-declare this, so that users of libcolo do not
// compile Boost.Interprocess.
struct MappedObject {
  shm::Segment segment;
};

}  // namespace colo::detail
