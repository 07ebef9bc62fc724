// Declarations of ROLL's CPU ops (pure C++, no Python types): balanced partitioning,
// first-fit-decreasing packing and the GAE reverse scan. bindings.cpp exposes them as roll._C.
#pragma once

#include <cstdint>
#include <vector>

namespace roll {

// `n` workloads into `k` parts of near-equal sum: the better of Karmarkar-Karp largest differencing
// and greedy LPT (smaller largest sum, then smaller spread; KK on ties). With `equal_size` every
// part gets n / k items (n % k == 0 is checked by the caller). Returns the part of each item;
// parts are numbered by ascending sum. Tie-breaking matches roll/ops/partition.py exactly.
std::vector<int64_t> balanced_partition(const double* workloads, int64_t n, int64_t k,
                                        bool equal_size);

// First-fit-decreasing bin packing of `n` sizes into bins of `capacity` (every size <= capacity is
// checked by the caller). Returns the bin of each item; bins are numbered in opening order.
std::vector<int64_t> first_fit_decreasing(const double* sizes, int64_t n, double capacity);

// GAE over rows [row_begin, row_end) of (B, T) row-major arrays; see gae.cpp for the recursion.
void gae_rows(const float* rewards, const float* values, const float* mask, float* advantages,
              float* returns, int64_t row_begin, int64_t row_end, int64_t T, float gamma,
              float gamma_lam);

// GAE over all B rows, split across up to `max_threads` std::threads (0 = hardware concurrency).
void gae(const float* rewards, const float* values, const float* mask, float* advantages,
         float* returns, int64_t B, int64_t T, double gamma, double lam, int64_t max_threads);

}  // namespace roll
