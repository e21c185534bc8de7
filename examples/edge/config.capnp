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
    # The SigV4 signer, which the package imports (`import('aws4fetch')`) only when S3 keys
    # are given. workerd resolves a specifier against the importing module's name, as a URL
    # would, so the bare name is looked up beside wasm/js/index.js (a bundler such as wrangler
    # resolves it from node_modules instead).
    (name = "wasm/js/aws4fetch", esModule = embed "../../node_modules/aws4fetch/dist/aws4fetch.esm.js"),
  ],
  compatibilityDate = "2025-09-01",
  # S3 access as the AWS tools take it; empty values mean none (serve.mjs passes them through).
  bindings = [
    (name = "LAKE_URL", fromEnvironment = "LAKE_URL"),
    (name = "AWS_REGION", fromEnvironment = "AWS_REGION"),
    (name = "AWS_ENDPOINT_URL", fromEnvironment = "AWS_ENDPOINT_URL"),
    (name = "AWS_ACCESS_KEY_ID", fromEnvironment = "AWS_ACCESS_KEY_ID"),
    (name = "AWS_SECRET_ACCESS_KEY", fromEnvironment = "AWS_SECRET_ACCESS_KEY"),
    (name = "AWS_SESSION_TOKEN", fromEnvironment = "AWS_SESSION_TOKEN"),
  ],
  globalOutbound = "internet",
);
