// broker/mapped_object.hpp — keeps an object's segment mapped (private).
#pragma once

#include "segment.hpp"

namespace colo::detail {

// Public headers only forward-declare this, so that users of libcolo do not
// compile Boost.Interprocess.
struct MappedObject {
  shm::Segment segment;
  bool created = false;  // made by the call that returned it (not opened): undone if its companions fail
};

}  // namespace colo::detail
