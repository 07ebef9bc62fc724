// pybind11 bindings of the CPU ops as `roll._C`. Arrays arrive as C-contiguous numpy buffers
// (torch tensors via .numpy(), zero-copy); the GIL is released while the C++ loops run.
// Argument checks live in the Python wrappers (roll/ops/), which are the public API.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "ops.h"

namespace py = pybind11;

namespace {

using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
using FloatArray = py::array_t<float, py::array::c_style>;

// Item indices grouped by part as a list of lists, each ascending. Built with the C API: for
// thousands of items this is ~2x faster than pybind11's STL conversion or numpy's tolist().
py::list group_by_part(const std::vector<int64_t>& assignment, int64_t num_parts) {
  std::vector<Py_ssize_t> sizes(num_parts, 0);
  for (int64_t part : assignment) ++sizes[part];
  py::list parts(num_parts);
  std::vector<PyObject*> lists(num_parts);
  for (int64_t j = 0; j < num_parts; ++j) {
    py::list part(sizes[j]);
    lists[j] = part.ptr();
    parts[j] = std::move(part);
  }
  std::fill(sizes.begin(), sizes.end(), 0);  // now the fill cursor of each part
  for (size_t item = 0; item < assignment.size(); ++item) {
    const int64_t part = assignment[item];
    PyObject* index = PyLong_FromSsize_t(static_cast<Py_ssize_t>(item));
    if (index == nullptr) throw py::error_already_set();
    PyList_SET_ITEM(lists[part], sizes[part]++, index);  // steals the new reference
  }
  return parts;
}

py::list balanced_partition(const DoubleArray& workloads, int64_t k, bool equal_size) {
  const double* data = workloads.data();
  const int64_t n = workloads.size();
  std::vector<int64_t> assignment;
  {
    py::gil_scoped_release release;
    assignment = roll::balanced_partition(data, n, k, equal_size);
  }
  return group_by_part(assignment, k);
}

py::list first_fit_decreasing(const DoubleArray& sizes, double capacity) {
  const double* data = sizes.data();
  const int64_t n = sizes.size();
  std::vector<int64_t> assignment;
  {
    py::gil_scoped_release release;
    assignment = roll::first_fit_decreasing(data, n, capacity);
  }
  const int64_t num_bins =
      assignment.empty() ? 0 : *std::max_element(assignment.begin(), assignment.end()) + 1;
  return group_by_part(assignment, num_bins);
}

void check_matrix(const FloatArray& array, const char* name, py::ssize_t rows, py::ssize_t cols) {
  if (array.ndim() != 2 || array.shape(0) != rows || array.shape(1) != cols) {
    throw std::invalid_argument(std::string("gae: ") + name + " must have shape (" +
                                std::to_string(rows) + ", " + std::to_string(cols) + ")");
  }
}

py::tuple gae(const FloatArray& rewards, const FloatArray& values, const FloatArray& mask,
              double gamma, double lam, int64_t max_threads) {
  if (rewards.ndim() != 2) throw std::invalid_argument("gae: rewards must be 2-D (B, T)");
  const py::ssize_t B = rewards.shape(0), T = rewards.shape(1);
  check_matrix(values, "values", B, T);
  check_matrix(mask, "mask", B, T);
  FloatArray advantages({B, T});
  FloatArray returns({B, T});
  const float* r = rewards.data();
  const float* v = values.data();
  const float* m = mask.data();
  float* adv = advantages.mutable_data();
  float* ret = returns.mutable_data();
  {
    py::gil_scoped_release release;
    roll::gae(r, v, m, adv, ret, B, T, gamma, lam, max_threads);
  }
  return py::make_tuple(advantages, returns);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ROLL CPU ops: balanced partitioning, FFD packing, GAE (wrapped by roll.ops)";
  m.def("balanced_partition", &balanced_partition, py::arg("workloads"), py::arg("k"),
        py::arg("equal_size"),
        "The better of Karmarkar-Karp and greedy LPT into k parts; returns a list of index lists.");
  m.def("first_fit_decreasing", &first_fit_decreasing, py::arg("sizes"), py::arg("capacity"),
        "First-fit-decreasing packing into bins of `capacity`; returns a list of index lists.");
  m.def("gae", &gae, py::arg("rewards"), py::arg("values"), py::arg("mask"), py::arg("gamma"),
        py::arg("lam"), py::arg("max_threads") = 0,
        "GAE reverse scan over float32 (B, T) arrays; returns (advantages, returns).");
}
