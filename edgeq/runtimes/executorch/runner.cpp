// edgeq-et-runner: time Method::execute() on a .pte with no Python in the loop.
// Built by edgeq/runtimes/executorch/native.py against the executorch wheel's
// headers and shared libraries. Contract with native.py:
//   stdout: exactly one JSON line on success, nothing else.
//   stderr: on failure, the LAST line names what failed (native.py shows it).
//   exit:   0 ok, 2 bad arguments / inputs, 3 runtime failure.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <executorch/extension/data_loader/file_data_loader.h>
#include <executorch/extension/memory_allocator/malloc_memory_allocator.h>
#include <executorch/runtime/core/exec_aten/util/dim_order_util.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/platform.h>
#include <executorch/runtime/platform/runtime.h>

// The wheel ships libexecutorch_threadpool.so but not threadpool.h (it pulls in
// pthreadpool.h, also not shipped). We only call two member functions through a
// pointer, so declaring them is enough; the mangled names match the library's.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace et = executorch::runtime;
using executorch::aten::ScalarType;
using executorch::extension::FileDataLoader;
using executorch::extension::MallocMemoryAllocator;

namespace {

// ExecuTorch logs Info lines for normal operation; keep them off the console but
// remember the last error-level message so a failure line can explain itself.
std::string g_last_et_error;
bool g_verbose = false;

void quiet_log(et_timestamp_t, et_pal_log_level_t level, const char* file,
               const char*, size_t line, const char* msg, size_t len) {
  std::string m(msg, len);
  while (!m.empty() && (m.back() == '\n' || m.back() == '\r')) m.pop_back();
  if (level == kError || level == kFatal) g_last_et_error = m;
  if (g_verbose || level == kFatal)
    fprintf(stderr, "[et %c %s:%zu] %s\n", (char)level, file, line, m.c_str());
}

[[noreturn]] void die(int code, const std::string& what) {
  fflush(stdout);
  fprintf(stderr, "edgeq-et-runner: %s\n", what.c_str());
  exit(code);
}

[[noreturn]] void die_et(const std::string& what, et::Error err) {
  char buf[96];
  snprintf(buf, sizeof buf, " (executorch error 0x%x %s)", (unsigned)err, et::to_string(err));
  std::string line = what + buf;
  if (!g_last_et_error.empty()) line += ": " + g_last_et_error;
  die(3, line);
}

// numpy dtype names, so native.py can np.dtype() them directly.
const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "float32";
    case ScalarType::Double: return "float64";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Byte: return "uint8";
    case ScalarType::Char: return "int8";
    case ScalarType::Short: return "int16";
    case ScalarType::Int: return "int32";
    case ScalarType::Long: return "int64";
    case ScalarType::Bool: return "bool";
    default: return "unknown";
  }
}

template <typename T>
std::string join(const T* p, size_t n) {
  std::string s = "[";
  for (size_t i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(p[i]);
  return s + "]";
}

long vmhwm_kb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

bool write_file(const std::string& path, const void* data, size_t n) {
  FILE* f = fopen(path.c_str(), "wb");
  if (!f) return false;
  bool ok = fwrite(data, 1, n, f) == n;
  return fclose(f) == 0 && ok;
}

long parse_int(const char* flag, const char* v, long lo) {
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || x < lo)
    die(2, std::string("bad value for ") + flag + ": '" + v + "'");
  return x;
}

// Input bytes plus the TensorImpl metadata that points at them; the impl keeps
// raw pointers into sizes/dim_order/strides, so these must not move.
struct Input {
  std::vector<uint8_t> bytes;
  std::vector<executorch::aten::SizesType> sizes;
  std::vector<executorch::aten::DimOrderType> dim_order;
  std::vector<executorch::aten::StridesType> strides;
  std::unique_ptr<executorch::aten::TensorImpl> impl;
};

}  // namespace

int main(int argc, char** argv) {
  std::string model, method_name = "forward", out_dir;
  std::vector<std::string> input_paths;
  long runs = 10, warmup = 2, threads = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--verbose") { g_verbose = true; continue; }
    if (i + 1 >= argc) die(2, "missing value for " + a);
    const char* v = argv[++i];
    if (a == "--model") model = v;
    else if (a == "--input") input_paths.push_back(v);
    else if (a == "--runs") runs = parse_int("--runs", v, 1);
    else if (a == "--warmup") warmup = parse_int("--warmup", v, 0);
    else if (a == "--threads") threads = parse_int("--threads", v, 0);
    else if (a == "--output-dir") out_dir = v;
    else if (a == "--method") method_name = v;
    else die(2, "unknown argument " + a);
  }
  if (model.empty()) die(2, "--model is required");

  et::register_pal(et::PalImpl::create(quiet_log, __FILE__));
  et::runtime_init();

  // Resize before loading: the XNNPACK delegate takes the pthreadpool when the
  // method is initialised, so a later resize would not reach it.
  bool threads_applied = false;
  size_t pool_threads = 0;
  if (auto* pool = executorch::extension::threadpool::get_threadpool()) {
    if (threads > 0) pool->_unsafe_reset_threadpool((uint32_t)threads);
    pool_threads = pool->get_thread_count();
    threads_applied = threads == 0 || pool_threads == (size_t)threads;
  }

  auto loader = FileDataLoader::from(model.c_str());
  if (!loader.ok()) die_et("cannot open model " + model, loader.error());
  auto program = et::Program::load(&loader.get(), et::Program::Verification::InternalConsistency);
  if (!program.ok()) die_et("Program::load failed for " + model, program.error());
  auto meta = program->method_meta(method_name.c_str());
  if (!meta.ok()) die_et("no method '" + method_name + "' in " + model, meta.error());

  const size_t n_in = meta->num_inputs();
  if (input_paths.size() != n_in)
    die(2, "method '" + method_name + "' takes " + std::to_string(n_in) + " inputs, got " +
               std::to_string(input_paths.size()) + " --input files");

  std::vector<Input> inputs(n_in);
  for (size_t i = 0; i < n_in; ++i) {
    auto tag = meta->input_tag(i);
    if (!tag.ok() || *tag != et::Tag::Tensor) die(2, "input " + std::to_string(i) + " is not a tensor (unsupported)");
    auto info = meta->input_tensor_meta(i);
    if (!info.ok()) die_et("input_tensor_meta(" + std::to_string(i) + ")", info.error());
    std::ifstream f(input_paths[i], std::ios::binary);
    if (!f) die(2, "cannot read input file " + input_paths[i]);
    Input& in = inputs[i];
    in.bytes.assign(std::istreambuf_iterator<char>(f), {});
    if (in.bytes.size() != info->nbytes())
      die(2, "input " + std::to_string(i) + " (" + input_paths[i] + ") has " + std::to_string(in.bytes.size()) +
                 " bytes, the model expects " + std::to_string(info->nbytes()) + " (" +
                 dtype_name(info->scalar_type()) + " " + join(info->sizes().data(), info->sizes().size()) + ")");
    in.sizes.assign(info->sizes().begin(), info->sizes().end());
    in.dim_order.assign(info->dim_order().begin(), info->dim_order().end());
    in.strides.resize(in.sizes.size());
    if (!in.sizes.empty())
      et::dim_order_to_stride_nocheck(in.sizes.data(), in.dim_order.data(), in.sizes.size(), in.strides.data());
    in.impl = std::make_unique<executorch::aten::TensorImpl>(
        info->scalar_type(), (ssize_t)in.sizes.size(), in.sizes.data(), in.bytes.data(), in.dim_order.data(),
        in.strides.data());
  }

  // Planned buffers sized from MethodMeta; method/temp allocations go to malloc
  // so no pool size has to be guessed for an unknown model.
  std::vector<std::unique_ptr<uint8_t[]>> planned;
  std::vector<et::Span<uint8_t>> spans;
  for (size_t id = 0; id < meta->num_memory_planned_buffers(); ++id) {
    size_t n = (size_t)meta->memory_planned_buffer_size(id).get();
    planned.emplace_back(new uint8_t[n]);
    spans.emplace_back(planned.back().get(), n);
  }
  et::HierarchicalAllocator planned_memory({spans.data(), spans.size()});
  MallocMemoryAllocator method_allocator, temp_allocator;
  et::MemoryManager memory_manager(&method_allocator, &planned_memory, &temp_allocator);
  auto method = program->load_method(method_name.c_str(), &memory_manager);
  if (!method.ok()) die_et("loading method '" + method_name + "' failed", method.error());

  // Inputs are set before every run, outside the timed region: memory planning
  // may reuse an input's storage for intermediates, so a stale input would be
  // garbage on the next run.
  auto run_once = [&](const char* phase, long k) {
    for (size_t i = 0; i < n_in; ++i) {
      et::Error e = method->set_input(et::EValue(executorch::aten::Tensor(inputs[i].impl.get())), i);
      if (e != et::Error::Ok) die_et("set_input(" + std::to_string(i) + ") failed", e);
    }
    auto t0 = std::chrono::steady_clock::now();
    et::Error e = method->execute();
    auto t1 = std::chrono::steady_clock::now();
    if (e != et::Error::Ok) die_et(std::string("execute() failed in ") + phase + " run " + std::to_string(k), e);
    return (long long)std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
  };
  for (long k = 0; k < warmup; ++k) run_once("warmup", k);
  std::vector<long long> times;
  times.reserve(runs);
  for (long k = 0; k < runs; ++k) times.push_back(run_once("timed", k));

  const size_t n_out = method->outputs_size();
  std::ostringstream js;
  js << "{\"times_ns\": " << join(times.data(), times.size()) << ", \"vmhwm_kb\": " << vmhwm_kb()
     << ", \"method\": \"" << method_name << "\", \"num_inputs\": " << n_in << ", \"num_outputs\": " << n_out
     << ", \"threads\": " << pool_threads << ", \"threads_applied\": " << (threads_applied ? "true" : "false");
  if (!out_dir.empty()) {
    js << ", \"outputs\": [";
    for (size_t i = 0; i < n_out; ++i) {
      const et::EValue& v = method->get_output(i);
      std::string path = out_dir + "/out" + std::to_string(i) + ".bin";
      const void* data = nullptr;
      size_t nbytes = 0;
      std::string desc;
      int64_t ival; double dval; bool bval;
      if (v.isTensor()) {
        auto t = v.toTensor();
        data = t.const_data_ptr(), nbytes = t.nbytes();
        desc = std::string("{\"dtype\": \"") + dtype_name(t.scalar_type()) + "\", \"shape\": " +
               join(t.sizes().data(), t.sizes().size()) + ", \"dim_order\": " +
               join(t.dim_order().data(), t.dim_order().size()) + "}";
      } else if (v.isInt()) {
        ival = v.toInt(), data = &ival, nbytes = 8, desc = "{\"dtype\": \"int64\", \"shape\": []}";
      } else if (v.isDouble()) {
        dval = v.toDouble(), data = &dval, nbytes = 8, desc = "{\"dtype\": \"float64\", \"shape\": []}";
      } else if (v.isBool()) {
        bval = v.toBool(), data = &bval, nbytes = 1, desc = "{\"dtype\": \"bool\", \"shape\": []}";
      } else {
        desc = "{\"dtype\": null, \"shape\": null}";
      }
      if (data && !write_file(path, data, nbytes)) die(3, "cannot write output file " + path);
      js << (i ? ", " : "") << desc;
    }
    js << "]";
  }
  js << "}";
  printf("%s\n", js.str().c_str());
  fflush(stdout);
  return 0;
}
