// Placement timing on a synthetic heterogeneous cluster (T4/L4/A10/A100/H100 and CPU-only nodes,
// random prices): one function over N nodes (every node filtered and scored), and a full re-plan
// of M functions (one replica each, accounted as placed). Prints JSON lines with medians.
//   bench_placement [--nodes 1000] [--functions 10000] [--repeats 5]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "control-plane/controller.h"
#include "control-plane/placement.h"
#include "control-plane/sqlite_state_store.h"

namespace {

using ferry::Accelerator;
using namespace ferry::control;
using Clock = std::chrono::steady_clock;

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kGiB = int64_t{1} << 30;

Cluster MakeCluster(int nodes, std::mt19937_64& rng) {
  struct Kind {
    const char* name;
    int64_t mem;
    int cc;
    double price;
  };
  const Kind kinds[] = {{"T4", 16 * kGiB, 75, 0.35},
                        {"L4", 24 * kGiB, 89, 0.8},
                        {"A10", 24 * kGiB, 86, 1.0},
                        {"A100", 80 * kGiB, 80, 3.0},
                        {"H100", 80 * kGiB, 90, 4.5}};
  Cluster c;
  for (int i = 0; i < nodes; ++i) {
    NodeSpec n;
    n.id = "node-" + std::to_string(i);
    n.cpu_cores = std::uniform_int_distribution<int>(8, 96)(rng);
    n.memory_bytes = std::uniform_int_distribution<int64_t>(32, 512)(rng) * kGiB;
    const int k = std::uniform_int_distribution<int>(-1, 4)(rng);
    n.price_per_hour = 0.05 * n.cpu_cores;
    if (k >= 0) {
      const int gpus = std::uniform_int_distribution<int>(1, 8)(rng);
      for (int g = 0; g < gpus; ++g) {
        n.gpus.push_back({g, c.kinds().Intern(kinds[k].name), kinds[k].mem, kinds[k].cc});
      }
      n.price_per_hour += gpus * kinds[k].price * std::uniform_real_distribution<>(0.8, 1.2)(rng);
    }
    c.AddNode(std::move(n));
  }
  return c;
}

Requirements RandomFunction(std::mt19937_64& rng) {
  Requirements r;
  const int a = std::uniform_int_distribution<int>(0, 2)(rng);
  r.accelerator = a == 0 ? Accelerator::kCpu : a == 1 ? Accelerator::kGpu : Accelerator::kAny;
  if (r.accelerator != Accelerator::kCpu) {
    r.gpu_memory_bytes = std::uniform_int_distribution<int64_t>(1, 8)(rng) * 256 * kMiB;
    r.min_compute_capability_x10 = std::uniform_int_distribution<int>(0, 1)(rng) ? 0 : 80;
  }
  r.cpu_cores = std::uniform_int_distribution<int>(1, 4)(rng) / 4.0;
  r.memory_bytes = std::uniform_int_distribution<int64_t>(1, 8)(rng) * 128 * kMiB;
  r.latency_target_us = std::uniform_int_distribution<int>(5, 100)(rng) * 1000;
  r.max_batch_size = 32;
  if (std::uniform_int_distribution<int>(0, 3)(rng) == 0) r.max_cost_per_million = 5.0;
  return r;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  int nodes = 1000;
  int functions = 10000;
  int repeats = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--nodes")) nodes = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--functions")) functions = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
  }
  std::mt19937_64 rng(42);
  const Cluster base = MakeCluster(nodes, rng);

  // 1. One function onto N nodes, many different functions, nothing accounted.
  {
    std::vector<double> us;
    int placed = 0;
    for (int i = 0; i < 2000; ++i) {
      const Requirements r = RandomFunction(rng);
      FunctionProfiles p;
      const auto t0 = Clock::now();
      const Decision d = PlaceOne(base, r, p, {});
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      placed += d.placed;
    }
    std::printf(
        "{\"bench\":\"place_one\",\"nodes\":%d,\"samples\":%zu,\"placed\":%d,\"p50_us\":%.1f,"
        "\"p99_us\":%.1f,\"max_us\":%.1f,\"goal_p99_us\":1000}\n",
        nodes, us.size(), placed, Percentile(us, 50), Percentile(us, 99), Percentile(us, 100));
  }

  // 2. Full re-plan: M functions, one replica each, accounted as placed.
  {
    std::vector<Requirements> fns;
    for (int i = 0; i < functions; ++i) fns.push_back(RandomFunction(rng));
    std::vector<double> ms;
    int placed = 0;
    for (int rep = 0; rep < repeats; ++rep) {
      Cluster c = base;
      placed = 0;
      const auto t0 = Clock::now();
      for (const Requirements& r : fns) {
        const Decision d = PlaceOne(c, r, {}, {});
        if (d.placed) {
          c.Assign(d.node, d.device_index, r);
          ++placed;
        }
      }
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    std::printf(
        "{\"bench\":\"full_replan\",\"nodes\":%d,\"functions\":%d,\"placed\":%d,\"repeats\":%d,"
        "\"median_ms\":%.1f,\"min_ms\":%.1f,\"goal_ms\":2000}\n",
        nodes, functions, placed, repeats, Percentile(ms, 50), Percentile(ms, 0));
  }
  // 3. The controller end to end: N registered agents, one Apply of M functions (parse, durable
  // commit, placement of every replica, desired sets for every node, routes).
  {
    const std::string dir = "/tmp/ferry-bench-placement-" + std::to_string(::getpid());
    auto store = SqliteStateStore::Create({.path = dir + "/ferry.db"});
    ControllerOptions o;
    o.store = store->get();
    ferry::FakeClock fake_clock;  // leases must not expire while the benchmark runs
    o.clock = &fake_clock;
    auto controller = Controller::Create(o);
    struct Null : AgentChannel {
      void Send(const v1::ControlMessage&) override {}
    } sink;
    for (int i = 0; i < nodes; ++i) {
      const NodeSpec& n = base.nodes()[i];
      v1::Register reg;
      reg.set_node_name(n.id);
      reg.mutable_inventory()->set_cpu_cores(n.cpu_cores);
      reg.mutable_inventory()->set_memory_bytes(n.memory_bytes);
      for (const auto& g : n.gpus) {
        auto* gpu = reg.mutable_inventory()->add_gpus();
        gpu->set_index(g.index);
        gpu->set_name(base.kinds().Name(g.kind));
        gpu->set_memory_bytes(g.memory_bytes);
        gpu->set_compute_capability(std::to_string(g.compute_capability_x10 / 10) + "." +
                                    std::to_string(g.compute_capability_x10 % 10));
      }
      reg.set_price_per_hour(n.price_per_hour);
      reg.set_http_address(n.id + ":8000");
      (void)(*controller)->RegisterAgent(reg, &sink);
    }
    // The parser takes at most 1,000 documents per file: 500 per file.
    v1::ApplyRequest req;
    std::string docs;
    auto flush = [&] {
      auto* f = req.add_files();
      f->set_path("/bench/functions-" + std::to_string(req.files_size()) + ".yaml");
      f->set_content(docs);
      docs.clear();
    };
    for (int i = 0; i < functions; ++i) {
      if (i > 0 && i % 500 == 0) flush();
      const char* accel[] = {"cpu", "gpu", "any"};
      const int a = i % 3;
      docs +=
          "{\"apiVersion\": \"ferry.dev/v1\", \"kind\": \"Function\", \"metadata\": "
          "{\"name\": \"f" +
          std::to_string(i) +
          "\"}, \"spec\": {\"runtime\": \"echo\", "
          "\"hardware\": {\"accelerator\": \"" +
          accel[a] +
          "\", \"cpuCores\": 0.25, "
          "\"memoryMiB\": 256" +
          (a ? ", \"gpuMemoryMiB\": 512" : "") + "}}}\n---\n";
    }
    flush();
    const auto t0 = Clock::now();
    auto resp = (*controller)->Apply(req);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (!resp.ok()) std::fprintf(stderr, "apply: %s\n", resp.status().ToString().c_str());
    int ready_routes = (*controller)->GetRoutes("").routes_size();
    std::printf(
        "{\"bench\":\"controller_apply\",\"nodes\":%d,\"functions\":%d,\"ok\":%s,"
        "\"replicas_placed\":%d,\"apply_ms\":%.1f}\n",
        nodes, functions, resp.ok() ? "true" : "false", ready_routes, ms);
    const auto t1 = Clock::now();
    (*controller)->Tick();  // nothing changed: must be cheap
    std::printf("{\"bench\":\"controller_idle_tick\",\"us\":%.1f}\n",
                std::chrono::duration<double, std::micro>(Clock::now() - t1).count());
    controller->reset();
    store->reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  return 0;
}
