// tools/bench/colod_cost.hpp — `colo bench lock-table --cluster` (colod_cost.cpp).
#pragma once

#include <string>

namespace colo::cli {

struct ColodCostOptions {
  double seconds = 5;  // each cell's measuring window
  std::string redis;   // HOST:PORT, else $COLO_REDIS
};

int run_colod_cost(const ColodCostOptions& opt);

}  // namespace colo::cli
