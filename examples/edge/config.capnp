# workerd configuration for the Medallion edge example (see README.md next to this file).
# `npm run edge` starts it with the socket address from $PORT; `--socket-addr` overrides the
# address below.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .medallionWorker),
    # Table URLs may point at this machine or a private network (the tests serve data on
    # 127.0.0.1); the default outbound service would allow public addresses only.
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:8787", http = (), service = "main") ],
);

const medallionWorker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "wasm/js/index.js", esModule = embed "../../wasm/js/index.js"),
    (name = "wasm/pkg/medallion_wasm.js", esModule = embed "../../wasm/pkg/medallion_wasm.js"),
    (name = "wasm/pkg/medallion_wasm_bg.wasm", wasm = embed "../../wasm/pkg/medallion_wasm_bg.wasm"),
  ],
  compatibilityDate = "2025-09-01",
  bindings = [ (name = "LAKE_URL", fromEnvironment = "LAKE_URL") ],
  globalOutbound = "internet",
);
