// ferry: the command-line client of the control plane (kubectl-like verbs) and `ferry up`, which
// runs a one-machine cluster (ferry-control with its gateway and one ferry-agent) as child
// processes.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "ferry/client.h"
#include "ferry_control.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "sdk/cli/cli_util.h"
#include "sdk/cli/usage_view.h"

namespace {

namespace fs = std::filesystem;
namespace v1 = ferry::control::v1;
using ferry::cli::FormatTable;

constexpr char kUsage[] = R"(ferry: the ferry command-line tool

Usage:
  ferry apply -f FILE|DIR            create or update functions (all-or-nothing)
  ferry get functions|nodes [-o wide|json|yaml]
  ferry describe function NAME       replicas and where, profile, SLO, pending reasons
  ferry delete function NAME
  ferry invoke NAME --data JSON      call a function through the gateway
  ferry usage [--since DURATION] [--function NAME] [-o json|yaml]
                                     metered usage and cost per function (DURATION: 90s, 15m,
                                     2h, 1d; default: everything recorded)
  ferry up [-f DIR]                  run ferry-control (+ gateway) and one ferry-agent here,
                                     apply DIR (default examples/), wait until ready; Ctrl-C stops

Global flags:
  --control HOST:PORT   control plane (default $FERRY_CONTROL or 127.0.0.1:7070)
  --token-file FILE     bearer token for the control API (default $FERRY_TOKEN_FILE)
  --gateway URL         data-plane gateway (default $FERRY_GATEWAY or http://127.0.0.1:8000)
  --timeout SECONDS     per call (default 10)

ferry up flags:
  --state DIR           state folder (default ./.ferry): ferry.db, logs
  --control-bin PATH    ferry-control binary (default: found next to ferry in the build tree)
  --agent-bin PATH      ferry-agent binary (default: likewise)
  --admin-token-file F  start ferry-control with this admin token file
  --ready-timeout SEC   give up waiting for ready replicas after this (default 120)
  --agent-arg ARG       extra ferry-agent argument (repeatable)
  --plugin-dir DIR      folder the agent may load function libraries from (runtime: plugin)
)";

struct Options {
  std::vector<std::string> positional;
  std::string control;
  std::string token_file;
  std::string gateway;
  std::string output;
  std::string file;
  std::string data;
  bool has_data = false;
  std::string since;     // ferry usage --since
  std::string function;  // ferry usage --function
  std::string state = ".ferry";
  std::string control_bin;
  std::string agent_bin;
  std::string admin_token_file;
  std::vector<std::string> agent_args;
  std::string plugin_dir;
  double timeout_s = 10;
  double ready_timeout_s = 120;
  bool help = false;
};

int Fail(const std::string& message) {
  std::cout.flush();
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 1;
}

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

// Parses flags anywhere on the line ("--flag value" or "--flag=value"); the rest is positional.
std::optional<std::string> ParseArgs(int argc, char** argv, Options& o) {
  std::map<std::string, std::string*> strings = {{"--control", &o.control},
                                                 {"--token-file", &o.token_file},
                                                 {"--gateway", &o.gateway},
                                                 {"-o", &o.output},
                                                 {"--output", &o.output},
                                                 {"-f", &o.file},
                                                 {"--filename", &o.file},
                                                 {"--data", &o.data},
                                                 {"-d", &o.data},
                                                 {"--state", &o.state},
                                                 {"--control-bin", &o.control_bin},
                                                 {"--agent-bin", &o.agent_bin},
                                                 {"--admin-token-file", &o.admin_token_file},
                                                 {"--plugin-dir", &o.plugin_dir},
                                                 {"--since", &o.since},
                                                 {"--function", &o.function}};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help" || arg == "help") {
      o.help = true;
      continue;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      o.positional.push_back(arg);
      continue;
    }
    std::string name = arg, value;
    bool inline_value = false;
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      inline_value = true;
    }
    auto take = [&]() -> std::optional<std::string> {
      if (inline_value) return value;
      if (i + 1 >= argc) return std::nullopt;
      return std::string(argv[++i]);
    };
    auto v = take();
    if (!v) return absl::StrCat("flag ", name, " needs a value");
    if (auto it = strings.find(name); it != strings.end()) {
      *it->second = *v;
      if (name == "--data" || name == "-d") o.has_data = true;
    } else if (name == "--agent-arg") {
      o.agent_args.push_back(*v);
    } else if (name == "--timeout" || name == "--ready-timeout") {
      double d = 0;
      try {
        d = std::stod(*v);
      } catch (...) {
        return absl::StrCat(name, " wants seconds, got '", *v, "'");
      }
      (name == "--timeout" ? o.timeout_s : o.ready_timeout_s) = d;
    } else {
      return absl::StrCat("unknown flag ", name, " (see ferry --help)");
    }
  }
  if (o.control.empty()) o.control = EnvOr("FERRY_CONTROL", "127.0.0.1:7070");
  if (o.gateway.empty()) o.gateway = EnvOr("FERRY_GATEWAY", "http://127.0.0.1:8000");
  if (o.token_file.empty()) o.token_file = EnvOr("FERRY_TOKEN_FILE", "");
  return std::nullopt;
}

// --- control API ---------------------------------------------------------------------------------

// ferry::Client plus the CLI's error wording. `data_plane`: talk to the gateway (invoke) rather
// than to the control plane.
class Client {
 public:
  static absl::StatusOr<Client> Create(const Options& o, bool data_plane = false) {
    Client c;
    ferry::ClientOptions options;
    options.timeout_ms = std::max<int64_t>(1, static_cast<int64_t>(o.timeout_s * 1000));
    if (data_plane) {
      options.http_address = o.gateway;
    } else {
      options.control_address = o.control;
      if (!o.token_file.empty()) {
        std::ifstream in(o.token_file);
        if (!in) {
          return absl::NotFoundError(absl::StrCat("cannot read --token-file ", o.token_file));
        }
        std::stringstream ss;
        ss << in.rdbuf();
        options.admin_token = std::string(absl::StripAsciiWhitespace(ss.str()));
      }
    }
    auto api = ferry::Client::Create(options);
    if (!api.ok()) return api.status();
    c.api_ = *std::move(api);
    c.target_ = o.control;
    return c;
  }

  ferry::Client& api() { return *api_; }

  // For control RPCs ferry::Client does not wrap.
  std::unique_ptr<grpc::ClientContext> Context() const { return api_->NewControlContext(); }
  v1::ControlPlane::Stub& stub() { return *api_->control_stub(); }

  // "error: ..." text for a failed call.
  std::string Describe(const absl::Status& s) const {
    switch (s.code()) {
      case absl::StatusCode::kUnavailable:
        return absl::StrCat("cannot reach the control plane at ", target_, ": ", s.message());
      case absl::StatusCode::kUnauthenticated:
        return absl::StrCat("UNAUTHENTICATED: ", s.message(),
                            " (pass --token-file or set FERRY_TOKEN_FILE)");
      case absl::StatusCode::kDeadlineExceeded:
        return absl::StrCat("the control plane at ", target_, " did not answer in time");
      default:
        return std::string(s.message());
    }
  }
  std::string Describe(const grpc::Status& s) const {
    return Describe(absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message()));
  }

 private:
  std::unique_ptr<ferry::Client> api_;
  std::string target_;
};

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  return out;
}

int PrintStructured(const google::protobuf::Message& m, const std::string& format) {
  const std::string json = ToJson(m);
  if (format == "json") {
    std::cout << json;
    if (!json.empty() && json.back() != '\n') std::cout << '\n';
  } else {
    std::cout << ferry::cli::ToYaml(nlohmann::json::parse(json));
  }
  return 0;
}

std::string StateName(v1::ReplicaState s) {
  std::string n = v1::ReplicaState_Name(s);
  n = std::string(absl::StripPrefix(n, "REPLICA_STATE_"));
  return absl::AsciiStrToLower(n);
}

std::string Mib(int64_t bytes) { return absl::StrCat(bytes >> 20, "Mi"); }

std::string Money(double v) { return absl::StrFormat("$%.4g", v); }

absl::StatusOr<std::vector<ferry::cli::ManifestSource>> Manifests(const std::string& path) {
  return ferry::cli::CollectManifests(path);
}

int Apply(Client& client, const std::string& path, bool quiet = false) {
  if (path.empty()) return Fail("ferry apply needs -f FILE|DIR");
  auto files = Manifests(path);
  if (!files.ok()) return Fail(std::string(files.status().message()));
  std::vector<ferry::ManifestText> texts;
  for (const auto& f : *files) texts.push_back({f.path, f.content});
  auto res = client.api().Apply(texts);
  if (!res.ok()) return Fail(client.Describe(res.status()));
  if (!quiet) {
    for (const auto& c : res->changes())
      std::cout << "function/" << c.name() << " " << c.action() << "\n";
  }
  return 0;
}

std::string NodesOf(const v1::FunctionStatus& f) {
  std::set<std::string> nodes;
  for (const auto& r : f.replicas()) {
    if (!r.node_id().empty()) nodes.insert(r.node_id());
  }
  return nodes.empty() ? "<none>" : absl::StrJoin(nodes, ",");
}

int GetFunctions(Client& client, const std::string& format) {
  auto listed = client.api().ListFunctions();
  if (!listed.ok()) return Fail(client.Describe(listed.status()));
  const v1::ListFunctionsResponse& res = *listed;
  if (format == "json" || format == "yaml") return PrintStructured(res, format);
  const bool wide = format == "wide";
  std::vector<std::vector<std::string>> rows;
  if (wide) {
    rows.push_back({"NAME", "RUNTIME", "ACCELERATOR", "DESIRED", "READY", "NODES", "RPS",
                    "LAST SCALING", "GENERATION", "SLO", "COST/1M", "PENDING"});
  } else {
    rows.push_back({"NAME", "RUNTIME", "ACCELERATOR", "DESIRED", "READY", "NODES", "LAST SCALING"});
  }
  for (const auto& f : res.functions()) {
    // The autoscaler's last change, with its reason and age ("idle 300s: to zero (2m ago)").
    std::string scaling = f.scale_reason().empty() ? "-" : f.scale_reason();
    if (!f.scale_reason().empty()) {
      const int64_t age_s = f.scale_decision_age_ms() / 1000;
      absl::StrAppend(&scaling, " (",
                      age_s < 120 ? absl::StrCat(age_s, "s") : absl::StrCat(age_s / 60, "m"),
                      " ago)");
    }
    std::string ready = absl::StrCat(f.ready_replicas());
    if (f.draining_replicas() > 0) {
      absl::StrAppend(&ready, " (+", f.draining_replicas(), " draining)");
    }
    std::vector<std::string> row = {
        f.name(), f.runtime(), f.hardware().accelerator(), absl::StrCat(f.desired_replicas()),
        ready,    NodesOf(f)};
    if (wide) row.push_back(absl::StrFormat("%.4g", f.observed_rps()));
    row.push_back(scaling);
    if (wide) {
      double cost = 0;
      int n = 0;
      for (const auto& r : f.replicas()) {
        if (!r.node_id().empty()) cost += r.cost_per_million(), ++n;
      }
      row.push_back(absl::StrCat(f.generation()));
      row.push_back(f.slo().latency_target_ms() > 0
                        ? absl::StrFormat("p%g<%gms", f.slo().latency_percentile(),
                                          f.slo().latency_target_ms())
                        : "-");
      row.push_back(n > 0 ? Money(cost / n) : "-");
      row.push_back(f.pending_reasons().empty() ? "-" : f.pending_reasons(0));
    }
    rows.push_back(std::move(row));
  }
  if (res.functions().empty()) {
    std::cerr << "No functions.\n";
    return 0;
  }
  std::cout << FormatTable(rows);
  return 0;
}

int GetNodes(Client& client, const std::string& format) {
  auto listed = client.api().ListNodes();
  if (!listed.ok()) return Fail(client.Describe(listed.status()));
  const v1::ListNodesResponse& res = *listed;
  if (format == "json" || format == "yaml") return PrintStructured(res, format);
  const bool wide = format == "wide";
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"NAME", "STATUS",   "CPU",       "MEMORY",
                                     "GPUS", "REPLICAS", "IN-FLIGHT", "HEARTBEAT"};
  if (wide) {
    for (const char* h : {"HTTP", "GRPC", "PRICE/H", "LABELS", "VERSION"}) header.push_back(h);
  }
  rows.push_back(header);
  for (const auto& n : res.nodes()) {
    std::vector<std::string> gpus;
    for (const auto& g : n.inventory().gpus()) {
      gpus.push_back(absl::StrCat(g.name(), " ", Mib(g.memory_bytes()), g.fake() ? " (fake)" : ""));
    }
    std::vector<std::string> row = {n.name(),
                                    n.lease_state() == v1::LEASE_STATE_ACTIVE ? "Ready" : "Lost",
                                    absl::StrFormat("%g", n.inventory().cpu_cores()),
                                    Mib(n.inventory().memory_bytes()),
                                    gpus.empty() ? "-" : absl::StrJoin(gpus, ","),
                                    absl::StrCat(n.replicas()),
                                    absl::StrCat(n.load().in_flight()),
                                    absl::StrCat(n.last_heartbeat_age_ms(), "ms ago")};
    if (wide) {
      std::vector<std::string> labels;
      for (const auto& [k, v] : n.labels()) labels.push_back(absl::StrCat(k, "=", v));
      std::sort(labels.begin(), labels.end());
      row.push_back(n.http_address());
      row.push_back(n.grpc_address());
      row.push_back(Money(n.price_per_hour()));
      row.push_back(labels.empty() ? "-" : absl::StrJoin(labels, ","));
      row.push_back(n.agent_version());
    }
    rows.push_back(std::move(row));
  }
  if (res.nodes().empty()) {
    std::cerr << "No nodes.\n";
    return 0;
  }
  std::cout << FormatTable(rows);
  return 0;
}

// ferry usage: the control plane's metered usage (docs/control-plane.md, "Metering").
int Usage(Client& client, const Options& o) {
  v1::GetUsageRequest req;
  if (!o.since.empty()) {
    absl::StatusOr<int64_t> since = ferry::cli::ParseDurationSeconds(o.since);
    if (!since.ok()) return Fail(std::string(since.status().message()));
    req.set_since_seconds(*since);
  }
  req.set_function(o.function);
  v1::GetUsageResponse res;
  const grpc::Status s = client.stub().GetUsage(client.Context().get(), req, &res);
  if (!s.ok()) return Fail(client.Describe(s));
  if (o.output == "json") {
    std::cout << ferry::cli::UsageToJson(res).dump(2) << "\n";
  } else if (o.output == "yaml") {
    std::cout << ferry::cli::ToYaml(ferry::cli::UsageToJson(res));
  } else if (res.functions().empty()) {
    std::cerr << "No usage recorded" << (o.since.empty() ? "" : " in the last " + o.since) << ".\n";
  } else {
    std::cout << ferry::cli::FormatUsageTable(res);
  }
  return 0;
}

int DescribeFunction(Client& client, const std::string& name) {
  auto got = client.api().GetFunction(name);
  if (!got.ok()) return Fail(client.Describe(got.status()));
  const v1::FunctionStatus& f = *got;
  std::ostringstream out;
  out << "Name:          " << f.name() << "\n"
      << "Runtime:       " << f.runtime() << "\n"
      << "Source:        " << f.source() << "\n"
      << "Generation:    " << f.generation() << "\n"
      << "Hardware:      accelerator=" << f.hardware().accelerator();
  if (f.hardware().gpu_memory_mib() > 0)
    out << " gpuMemory=" << f.hardware().gpu_memory_mib() << "Mi";
  if (!f.hardware().min_compute_capability().empty()) {
    out << " minComputeCapability=" << f.hardware().min_compute_capability();
  }
  out << " cpuCores=" << f.hardware().cpu_cores() << " memory=" << f.hardware().memory_mib()
      << "Mi\n";
  out << "SLO:           ";
  if (f.slo().latency_target_ms() > 0) {
    out << "p" << f.slo().latency_percentile() << " < " << f.slo().latency_target_ms() << " ms";
  } else {
    out << "no latency target";
  }
  out << ", minRps " << f.slo().min_rps();
  if (f.slo().has_max_cost_per_million())
    out << ", max " << Money(f.slo().max_cost_per_million()) << "/1M";
  if (!f.slo().on_overload().empty()) out << ", onOverload " << f.slo().on_overload();
  out << "\n";
  out << "Replicas:      " << f.ready_replicas() << " ready / " << f.desired_replicas()
      << " desired (min " << f.min_replicas() << ", max " << f.max_replicas() << "), maxBatchSize "
      << f.max_batch_size() << "\n";
  out << "Scaling:       " << (f.scale_reason().empty() ? "-" : f.scale_reason()) << " ("
      << f.scale_decision_age_ms() / 1000 << " s ago); "
      << absl::StrFormat("%.4g", f.observed_rps()) << " rps, "
      << absl::StrFormat("%.3g", f.observed_in_flight()) << " in flight"
      << (f.panic() ? ", PANIC" : "") << "\n";
  if (f.replicas_size() > 0) {
    std::vector<std::vector<std::string>> rows = {
        {"  REPLICA", "STATE", "NODE", "HARDWARE", "HTTP", "COST/1M", "IN-FLIGHT", "MESSAGE"}};
    for (const auto& r : f.replicas()) {
      rows.push_back({"  " + r.replica_id(), StateName(r.state()),
                      r.node_id().empty() ? "<pending>" : r.node_id(),
                      r.hardware_kind().empty() ? "-" : r.hardware_kind(),
                      r.http_address().empty() ? "-" : r.http_address(),
                      r.node_id().empty() ? "-" : Money(r.cost_per_million()),
                      absl::StrCat(r.in_flight()), r.message().empty() ? "-" : r.message()});
    }
    out << FormatTable(rows);
  }
  out << "Pending:       " << (f.pending_reasons().empty() ? "-" : "") << "\n";
  for (const auto& reason : f.pending_reasons()) out << "  " << reason << "\n";
  out << "Profiles:\n";
  if (f.profiles().empty()) out << "  -\n";
  for (const auto& p : f.profiles()) {
    out << "  " << p.hardware_kind() << ": "
        << (p.measured() ? "measured" : "default (not measured yet)")
        << absl::StrFormat(
               ", latency = %.1f us x batch + %.1f us, batch within SLO %d, %.0f req/s "
               "per replica",
               p.a_us(), p.b_us(), p.batch_within_slo(), p.throughput_rps())
        << "\n";
    if (!p.points().empty()) {
      std::vector<std::string> pts;
      for (const auto& pt : p.points()) {
        pts.push_back(absl::StrFormat("%d:%.0fus", pt.batch_size(), pt.latency_us()));
      }
      out << "    points " << absl::StrJoin(pts, " ") << "\n";
    }
  }
  std::cout << out.str();
  return 0;
}

int DeleteFunction(Client& client, const std::string& name) {
  auto deleted = client.api().DeleteFunction(name);
  if (!deleted.ok()) return Fail(client.Describe(deleted.status()));
  std::cout << "function/" << name << " deleted\n";
  return 0;
}

// --- data plane ---------------------------------------------------------------------------------

int Invoke(const Options& o, const std::string& name) {
  if (!o.has_data) return Fail("ferry invoke needs --data JSON");
  nlohmann::json data;
  try {
    data = nlohmann::json::parse(o.data);
  } catch (const std::exception& e) {
    return Fail(absl::StrCat("--data is not JSON: ", e.what()));
  }
  // Clipper-style bodies go to /NAME/predict; everything else is a KServe v2 infer request.
  const bool clipper = data.is_object() && (data.contains("input") || data.contains("input_batch"));
  auto client = Client::Create(o, /*data_plane=*/true);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  ferry::HttpRequest request = ferry::EncodePredict(name, o.data);
  if (!clipper) {
    request.target = absl::StrCat("/v2/models/", ferry::EscapePathSegment(name), "/infer");
  }
  auto answer = client->api().SendRaw(request);
  if (!answer.ok()) {
    return Fail(
        absl::StrCat("cannot reach the gateway at ", o.gateway, ": ", answer.status().message()));
  }
  std::cout << answer->body;
  if (answer->body.empty() || answer->body.back() != '\n') std::cout << '\n';
  if (answer->status / 100 != 2) {
    std::cout.flush();
    std::fprintf(stderr, "error: HTTP %d\n", answer->status);
    return 1;
  }
  return 0;
}

// --- ferry up ------------------------------------------------------------------------------------

fs::path SelfDir() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : self.parent_path();
}

// ferry lives at BUILD/sdk/cli/ferry; the daemons at BUILD/control-plane/ferry-control and
// BUILD/node-agent/ferry-agent. An installed layout keeps them side by side.
std::string FindSibling(const std::string& override_path, const std::string& subdir,
                        const std::string& name) {
  if (!override_path.empty()) return override_path;
  const fs::path dir = SelfDir();
  for (const fs::path& p :
       {dir / name, dir / ".." / ".." / subdir / name, dir / ".." / subdir / name}) {
    std::error_code ec;
    if (fs::exists(p, ec)) return fs::weakly_canonical(p, ec).string();
  }
  return (dir / ".." / ".." / subdir / name).lexically_normal().string();
}

pid_t Spawn(const std::vector<std::string>& args, const fs::path& log, const sigset_t& old_mask) {
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);  // the terminal's Ctrl-C reaches ferry only; it forwards a clean stop
    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    const int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    std::fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(fd);
  return pid;
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Children {
 public:
  void Add(pid_t pid, std::string name) { children_.push_back({pid, std::move(name), false}); }
  // A child that exited since the last call: its name and status text; nullopt if none.
  std::optional<std::string> Reap() {
    for (auto& c : children_) {
      if (c.done) continue;
      int status = 0;
      if (waitpid(c.pid, &status, WNOHANG) == c.pid) {
        c.done = true;
        return absl::StrCat(c.name, WIFEXITED(status)
                                        ? absl::StrCat(" exited with status ", WEXITSTATUS(status))
                                        : absl::StrCat(" was killed by signal ", WTERMSIG(status)));
      }
    }
    return std::nullopt;
  }
  // SIGTERM to each (last started first), waits up to `grace`, then SIGKILL.
  void StopAll(std::chrono::milliseconds grace) {
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
      if (!it->done) kill(it->pid, SIGTERM);
    }
    const auto deadline = std::chrono::steady_clock::now() + grace;
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
      while (!it->done) {
        int status = 0;
        if (waitpid(it->pid, &status, WNOHANG) == it->pid) {
          it->done = true;
          break;
        }
        if (std::chrono::steady_clock::now() > deadline) {
          std::fprintf(stderr, "ferry: %s did not stop in time: killing it\n", it->name.c_str());
          kill(it->pid, SIGKILL);
          waitpid(it->pid, &status, 0);
          it->done = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }

 private:
  struct Child {
    pid_t pid;
    std::string name;
    bool done;
  };
  std::vector<Child> children_;
};

// Waits for a pending stop signal for up to `ms`; returns it, or 0.
int WaitSignal(const sigset_t& set, int ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1'000'000L};
  const int sig = sigtimedwait(&set, nullptr, &ts);
  return sig > 0 ? sig : 0;
}

std::string CurlFor(const std::string& gateway, const v1::FunctionStatus& f) {
  const std::string base =
      absl::StrCat("curl -s -X POST ", gateway, "/v2/models/", f.name(), "/infer -d ");
  if (f.runtime() == "wordfilter") {
    return base +
           R"('{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["you are a darn fool"]}]}')";
  }
  if (f.runtime() == "echo") {
    return base +
           R"('{"inputs":[{"name":"INPUT0","shape":[1],"datatype":"BYTES","data":["hello"]}]}')";
  }
  return absl::StrCat("curl -s ", gateway, "/v2/models/", f.name());
}

int Up(Options o) {
  const std::string dir = o.file.empty() ? "examples" : o.file;
  const std::string control_bin = FindSibling(o.control_bin, "control-plane", "ferry-control");
  const std::string agent_bin = FindSibling(o.agent_bin, "node-agent", "ferry-agent");
  for (const auto& b : {control_bin, agent_bin}) {
    if (access(b.c_str(), X_OK) != 0) {
      return Fail(absl::StrCat(b,
                               " not found or not executable (build it, or pass --control-bin / "
                               "--agent-bin)"));
    }
  }
  // Validate the manifests' presence before starting anything.
  if (auto files = Manifests(dir); !files.ok()) return Fail(std::string(files.status().message()));
  auto gw = ferry::cli::ParseHttpUrl(o.gateway);
  if (!gw.ok()) return Fail(std::string(gw.status().message()));
  std::error_code ec;
  fs::create_directories(o.state, ec);
  if (ec) return Fail(absl::StrCat("cannot create ", o.state, ": ", ec.message()));
  const fs::path state = fs::absolute(o.state);

  sigset_t stop, old_mask;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop, &old_mask);
  Children children;
  auto shutdown = [&](int code) {
    std::fprintf(stderr, "ferry: stopping ferry-agent and ferry-control\n");
    children.StopAll(std::chrono::seconds(15));
    std::fprintf(stderr, "ferry: stopped\n");
    return code;
  };

  std::vector<std::string> control_args = {control_bin,
                                           "--listen",
                                           o.control,
                                           "--state",
                                           (state / "control").string(),
                                           "--http-listen",
                                           absl::StrCat(gw->first, ":", gw->second)};
  if (!o.admin_token_file.empty()) {
    control_args.push_back("--admin-token-file");
    control_args.push_back(o.admin_token_file);
    if (o.token_file.empty()) o.token_file = o.admin_token_file;
  }
  const fs::path control_log = state / "control.log";
  const pid_t control_pid = Spawn(control_args, control_log, old_mask);
  if (control_pid < 0) return Fail(absl::StrCat("cannot start ", control_bin));
  children.Add(control_pid, "ferry-control");
  std::fprintf(stderr, "ferry: started ferry-control (pid %d), log %s\n", control_pid,
               control_log.c_str());

  // Wait for both listening lines.
  static const std::regex kGrpc(R"(ferry-control: listening on (\S+):(\d+))");
  static const std::regex kHttp(R"(ferry-control: gateway listening on (\S+):(\d+))");
  std::string control_addr, gateway_url;
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);;) {
    const std::string log = ReadAll(control_log);
    std::smatch m1, m2;
    if (std::regex_search(log, m1, kGrpc) && std::regex_search(log, m2, kHttp)) {
      control_addr = absl::StrCat(m1[1].str(), ":", m1[2].str());
      gateway_url = absl::StrCat("http://", m2[1].str(), ":", m2[2].str());
      break;
    }
    if (auto exited = children.Reap()) {
      std::fprintf(stderr, "%s", log.c_str());
      return shutdown(Fail(*exited));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return shutdown(
          Fail("ferry-control did not start listening within 30 s; see " + control_log.string()));
    }
    if (WaitSignal(stop, 50)) return shutdown(0);
  }
  o.control = control_addr;

  std::vector<std::string> agent_args = {agent_bin,   "--control",   control_addr, "--host",
                                         "127.0.0.1", "--http-port", "0",          "--grpc-port",
                                         "0",         "--node-name", "local"};
  for (const auto& a : o.agent_args) agent_args.push_back(a);
  if (!o.plugin_dir.empty()) {
    agent_args.push_back(absl::StrCat("--plugin-dir=", fs::absolute(o.plugin_dir).string()));
  }
  const fs::path agent_log = state / "agent.log";
  const pid_t agent_pid = Spawn(agent_args, agent_log, old_mask);
  if (agent_pid < 0) return shutdown(Fail(absl::StrCat("cannot start ", agent_bin)));
  children.Add(agent_pid, "ferry-agent");
  std::fprintf(stderr, "ferry: started ferry-agent (pid %d), log %s\n", agent_pid,
               agent_log.c_str());

  auto client = Client::Create(o);
  if (!client.ok()) return shutdown(Fail(std::string(client.status().message())));

  // The agent registers.
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);;) {
    if (auto nodes = client->api().ListNodes(); nodes.ok()) {
      bool active = false;
      for (const auto& n : nodes->nodes()) active |= n.lease_state() == v1::LEASE_STATE_ACTIVE;
      if (active) break;
    }
    if (auto exited = children.Reap())
      return shutdown(Fail(*exited + "; see the logs in " + state.string()));
    if (std::chrono::steady_clock::now() > deadline) {
      return shutdown(Fail("ferry-agent did not register within 30 s; see " + agent_log.string()));
    }
    if (WaitSignal(stop, 100)) return shutdown(0);
  }
  std::fprintf(stderr, "ferry: node 'local' registered; applying %s\n", dir.c_str());
  if (Apply(*client, dir) != 0) return shutdown(1);
  std::cout.flush();

  // Progress until every function is ready.
  std::string last;
  v1::ListFunctionsResponse fns;
  for (auto deadline = std::chrono::steady_clock::now() +
                       std::chrono::milliseconds(int64_t(o.ready_timeout_s * 1000));
       ;) {
    fns.Clear();
    auto listed = client->api().ListFunctions();
    if (listed.ok()) {
      fns = *std::move(listed);
      // Settled: every function is fully ready, or what is placed is ready and the rest is
      // pending for a reason the placement gave (it will not change by waiting).
      bool settled = fns.functions_size() > 0;
      std::vector<std::string> parts;
      for (const auto& f : fns.functions()) {
        bool placed_ready = true;
        for (const auto& r : f.replicas()) {
          if (!r.node_id().empty() && r.state() != v1::REPLICA_STATE_READY) placed_ready = false;
        }
        const bool ready = f.desired_replicas() > 0 && f.ready_replicas() >= f.desired_replicas();
        settled &= ready || (placed_ready && !f.pending_reasons().empty());
        std::string part =
            absl::StrCat(f.name(), " ", f.ready_replicas(), "/", f.desired_replicas());
        if (!f.pending_reasons().empty()) absl::StrAppend(&part, " (", f.pending_reasons(0), ")");
        parts.push_back(part);
      }
      const std::string line = absl::StrJoin(parts, ", ");
      if (line != last) {
        std::fprintf(stderr, "ferry: ready replicas: %s\n", line.c_str());
        last = line;
      }
      if (settled) break;
    }
    if (auto exited = children.Reap())
      return shutdown(Fail(*exited + "; see the logs in " + state.string()));
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr,
                   "ferry: not every function is ready after %g s; still running (see "
                   "`ferry describe function NAME`)\n",
                   o.ready_timeout_s);
      break;
    }
    if (WaitSignal(stop, 200)) return shutdown(0);
  }

  std::printf("ferry: up. Gateway (KServe v2 HTTP + Clipper predict): %s  control: %s\n",
              gateway_url.c_str(), control_addr.c_str());
  if (fns.functions_size() > 0) {
    // A curl that works: a ready function, wordfilter or echo when they are.
    const v1::FunctionStatus* pick = &fns.functions(0);
    int best = -1;
    for (const auto& f : fns.functions()) {
      const int score = (f.ready_replicas() > 0 ? 4 : 0) + (f.runtime() == "wordfilter" ? 2 : 0) +
                        (f.runtime() == "echo" ? 1 : 0);
      if (score > best) best = score, pick = &f;
    }
    for (const auto& f : fns.functions()) {
      if (f.ready_replicas() < f.desired_replicas()) {
        std::printf("ferry: %s: %d/%d replicas ready%s%s\n", f.name().c_str(), f.ready_replicas(),
                    f.desired_replicas(), f.pending_reasons().empty() ? "" : "; pending: ",
                    f.pending_reasons().empty() ? "" : f.pending_reasons(0).c_str());
      }
    }
    std::printf("ferry: try:\n  %s\n", CurlFor(gateway_url, *pick).c_str());
    std::printf("  ferry get functions --control %s\n", control_addr.c_str());
  }
  std::printf("ferry: Ctrl-C stops both\n");
  std::fflush(stdout);

  for (;;) {
    if (int sig = WaitSignal(stop, 200)) {
      std::fprintf(stderr, "ferry: signal %d\n", sig);
      return shutdown(0);
    }
    if (auto exited = children.Reap()) {
      std::fprintf(stderr, "ferry: %s; see the logs in %s\n", exited->c_str(), state.c_str());
      return shutdown(1);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (auto err = ParseArgs(argc, argv, o)) return Fail(*err);
  const auto& p = o.positional;
  if (o.help || p.empty()) {
    std::fputs(kUsage, o.help ? stdout : stderr);
    return o.help ? 0 : 2;
  }
  const std::string& verb = p[0];
  if (verb == "up") return Up(o);
  if (verb == "invoke") {
    if (p.size() != 2) return Fail("usage: ferry invoke NAME --data JSON");
    return Invoke(o, p[1]);
  }
  auto client = Client::Create(o);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  if (!o.output.empty() && o.output != "wide" && o.output != "json" && o.output != "yaml") {
    return Fail(absl::StrCat("-o wants wide, json or yaml, got '", o.output, "'"));
  }
  auto is = [](const std::string& word, std::initializer_list<const char*> names) {
    for (const char* n : names) {
      if (word == n) return true;
    }
    return false;
  };
  if (verb == "apply") {
    if (p.size() != 1) return Fail("usage: ferry apply -f FILE|DIR");
    return Apply(*client, o.file);
  }
  if (verb == "get") {
    if (p.size() != 2) return Fail("usage: ferry get functions|nodes [-o wide|json|yaml]");
    if (is(p[1], {"functions", "function", "fn", "fns"})) return GetFunctions(*client, o.output);
    if (is(p[1], {"nodes", "node", "no"})) return GetNodes(*client, o.output);
    return Fail(absl::StrCat("unknown resource '", p[1], "' (functions or nodes)"));
  }
  if (verb == "usage") {
    if (p.size() != 1) return Fail("usage: ferry usage [--since DURATION] [-o json|yaml]");
    return Usage(*client, o);
  }
  if (verb == "describe" || verb == "delete") {
    if (p.size() != 3 || !is(p[1], {"function", "functions", "fn"})) {
      return Fail(absl::StrCat("usage: ferry ", verb, " function NAME"));
    }
    return verb == "describe" ? DescribeFunction(*client, p[2]) : DeleteFunction(*client, p[2]);
  }
  return Fail(absl::StrCat("unknown command '", verb, "' (see ferry --help)"));
}
