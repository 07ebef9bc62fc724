// First-fit-decreasing bin packing: sizes in descending order (ties: lower index first), each
// into the first open bin with room, else a new bin. FFD uses at most 11/9 OPT + 6/9 bins.
// The comparisons use `remaining >= size` exactly like the Python fallback in
// roll/ops/packing.py, so both give the same bins, also for non-integer sizes.
#include <algorithm>
#include <numeric>
#include <vector>

#include "ops.h"

namespace roll {

std::vector<int64_t> first_fit_decreasing(const double* sizes, int64_t n, double capacity) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return sizes[a] > sizes[b]; });

  std::vector<int64_t> assignment(n);
  std::vector<double> remaining;
  for (int64_t item : order) {
    const double size = sizes[item];
    size_t bin = 0;
    while (bin < remaining.size() && remaining[bin] < size) ++bin;
    if (bin == remaining.size()) remaining.push_back(capacity);
    remaining[bin] -= size;
    assignment[item] = static_cast<int64_t>(bin);
  }
  return assignment;
}

}  // namespace roll
