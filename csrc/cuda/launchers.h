// Host-side launchers of ROLL's CUDA kernels (plain CUDA runtime types, no torch), called by
// bindings.cpp. Pointers are device pointers to contiguous arrays; every launch goes on `stream`.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace roll_cuda {

// GAE reverse scan over (B, T) row-major float32 arrays, same semantics as csrc/gae.cpp.
void launch_gae(const float* rewards, const float* values, const float* mask, float* advantages,
                float* returns, int64_t B, int64_t T, double gamma, double lam, cudaStream_t stream);

// Per-group count / mean / std of `values` (n,) by `group_index` (n,) in [0, num_groups).
// `sums` and `squares` (num_groups,) float64 and `counts` (num_groups,) must be zero on entry;
// `counts` holds the result counts on exit.
void launch_group_stats(const float* values, const int64_t* group_index, int64_t n,
                        int64_t num_groups, bool unbiased, double* sums, double* squares,
                        unsigned long long* counts, float* mean, float* std, cudaStream_t stream);

}  // namespace roll_cuda
