// torch-extension bindings of the CUDA ops as `roll._C_cuda` (built by setup.py only with a CUDA
// torch and nvcc). Inputs are checked here too, since a wrong device or dtype would otherwise
// read garbage on the GPU; the Python wrappers in roll/ops/ are the public API.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <vector>

#include "launchers.h"

namespace {

void check_tensor(const torch::Tensor& tensor, const char* name, torch::ScalarType dtype) {
  TORCH_CHECK(tensor.is_cuda(), "roll._C_cuda: ", name, " must be a CUDA tensor, got ",
              tensor.device());
  TORCH_CHECK(tensor.scalar_type() == dtype, "roll._C_cuda: ", name, " must be ", dtype, ", got ",
              tensor.scalar_type());
}

std::vector<torch::Tensor> gae(const torch::Tensor& rewards, const torch::Tensor& values,
                               const torch::Tensor& mask, double gamma, double lam) {
  check_tensor(rewards, "rewards", torch::kFloat32);
  check_tensor(values, "values", torch::kFloat32);
  check_tensor(mask, "mask", torch::kFloat32);
  TORCH_CHECK(rewards.dim() == 2, "roll._C_cuda.gae: rewards must be (B, T), got ", rewards.sizes());
  TORCH_CHECK(values.sizes() == rewards.sizes() && mask.sizes() == rewards.sizes(),
              "roll._C_cuda.gae: values ", values.sizes(), " and mask ", mask.sizes(),
              " must match rewards ", rewards.sizes());
  const c10::cuda::CUDAGuard guard(rewards.device());
  const auto r = rewards.contiguous();
  const auto v = values.to(rewards.device()).contiguous();
  const auto m = mask.to(rewards.device()).contiguous();
  auto advantages = torch::empty_like(r);
  auto returns = torch::empty_like(r);
  roll_cuda::launch_gae(r.data_ptr<float>(), v.data_ptr<float>(), m.data_ptr<float>(),
                        advantages.data_ptr<float>(), returns.data_ptr<float>(), r.size(0),
                        r.size(1), gamma, lam, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {advantages, returns};
}

std::vector<torch::Tensor> group_stats(const torch::Tensor& values, const torch::Tensor& group_index,
                                       int64_t num_groups, bool unbiased) {
  check_tensor(values, "values", torch::kFloat32);
  check_tensor(group_index, "group_index", torch::kInt64);
  TORCH_CHECK(values.dim() == 1 && group_index.sizes() == values.sizes(),
              "roll._C_cuda.group_stats: values ", values.sizes(), " and group_index ",
              group_index.sizes(), " must both be (N,)");
  TORCH_CHECK(num_groups >= 0, "roll._C_cuda.group_stats: num_groups must be >= 0, got ",
              num_groups);
  const c10::cuda::CUDAGuard guard(values.device());
  const auto x = values.contiguous();
  const auto ids = group_index.to(values.device()).contiguous();
  const auto float64 = x.options().dtype(torch::kFloat64);
  auto sums = torch::zeros({num_groups}, float64);
  auto squares = torch::zeros({num_groups}, float64);
  // int64 storage, counted with unsigned 64-bit atomics (same width, counts never reach 2^63).
  auto counts = torch::zeros({num_groups}, x.options().dtype(torch::kInt64));
  auto mean = torch::empty({num_groups}, x.options());
  auto std = torch::empty({num_groups}, x.options());
  roll_cuda::launch_group_stats(x.data_ptr<float>(), ids.data_ptr<int64_t>(), x.numel(),
                                num_groups, unbiased, sums.data_ptr<double>(),
                                squares.data_ptr<double>(),
                                reinterpret_cast<unsigned long long*>(counts.data_ptr<int64_t>()),
                                mean.data_ptr<float>(), std.data_ptr<float>(),
                                c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {counts, mean, std};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ROLL CUDA ops: GAE reverse scan, segmented group statistics (wrapped by roll.ops)";
  m.def("gae", &gae, py::arg("rewards"), py::arg("values"), py::arg("mask"), py::arg("gamma"),
        py::arg("lam"), "GAE over float32 (B, T) CUDA tensors; returns [advantages, returns].");
  m.def("group_stats", &group_stats, py::arg("values"), py::arg("group_index"),
        py::arg("num_groups"), py::arg("unbiased") = true,
        "Per-group [count int64, mean float32, std float32] of (N,) CUDA tensors.");
}
