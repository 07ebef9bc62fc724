// CUDA segmented group statistics: count, mean and std of values per group id (e.g. the
// responses to one prompt in GRPO), for ids in any order. Two passes with float64 atomics:
// sums and counts, then squared deviations from the group mean (numerically stable, unlike
// E[x^2] - E[x]^2), then a per-group finalisation. Atomic order varies, so the last bits of the
// float64 sums may differ between runs; the float32 outputs practically never do.
#include <cmath>

#include "launchers.h"

namespace roll_cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

__global__ void sums_kernel(const float* __restrict__ values, const int64_t* __restrict__ group_index,
                            int64_t n, double* sums, unsigned long long* counts) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t g = group_index[i];
    atomicAdd(&sums[g], static_cast<double>(values[i]));
    atomicAdd(&counts[g], 1ULL);
  }
}

__global__ void squares_kernel(const float* __restrict__ values,
                               const int64_t* __restrict__ group_index, int64_t n,
                               const double* __restrict__ sums,
                               const unsigned long long* __restrict__ counts, double* squares) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t g = group_index[i];
    const double deviation = static_cast<double>(values[i]) - sums[g] / static_cast<double>(counts[g]);
    atomicAdd(&squares[g], deviation * deviation);
  }
}

__global__ void finalize_kernel(const double* __restrict__ sums, const double* __restrict__ squares,
                                const unsigned long long* __restrict__ counts, int64_t num_groups,
                                bool unbiased, float* mean, float* std) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < num_groups;
       g += stride) {
    const double count = static_cast<double>(counts[g]);
    const double dof = unbiased ? count - 1.0 : count;
    mean[g] = count > 0.0 ? static_cast<float>(sums[g] / count) : 0.0f;
    std[g] = dof > 0.0 ? static_cast<float>(sqrt(squares[g] / dof)) : 0.0f;
  }
}

unsigned int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

}  // namespace

void launch_group_stats(const float* values, const int64_t* group_index, int64_t n,
                        int64_t num_groups, bool unbiased, double* sums, double* squares,
                        unsigned long long* counts, float* mean, float* std, cudaStream_t stream) {
  if (num_groups == 0) return;
  if (n > 0) {
    sums_kernel<<<blocks_for(n), kThreads, 0, stream>>>(values, group_index, n, sums, counts);
    squares_kernel<<<blocks_for(n), kThreads, 0, stream>>>(values, group_index, n, sums, counts,
                                                           squares);
  }
  finalize_kernel<<<blocks_for(num_groups), kThreads, 0, stream>>>(sums, squares, counts,
                                                                   num_groups, unbiased, mean, std);
}

}  // namespace roll_cuda
