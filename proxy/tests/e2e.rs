//! End-to-end tests: the `hsmgate` binary against real SoftHSM tokens, with real clients
//! (curl, openssl s_client, a rustls client). One test binary, submodules by topic.

mod support;

#[path = "e2e/admin.rs"]
mod admin;
#[path = "e2e/admission.rs"]
mod admission;
#[path = "e2e/bad_input.rs"]
mod bad_input;
#[path = "e2e/cipher_order.rs"]
mod cipher_order;
#[path = "e2e/client_certs.rs"]
mod client_certs;
#[path = "e2e/clients.rs"]
mod clients;
#[path = "e2e/container.rs"]
mod container;
#[path = "e2e/corpus.rs"]
mod corpus;
#[path = "e2e/drain.rs"]
mod drain;
#[path = "e2e/file_key.rs"]
mod file_key;
#[path = "e2e/frozen_token.rs"]
mod frozen_token;
#[path = "e2e/ha.rs"]
mod ha;
#[path = "e2e/idle_buffers.rs"]
mod idle_buffers;
#[path = "e2e/inline_signing.rs"]
mod inline_signing;
#[path = "e2e/install.rs"]
mod install;
#[path = "e2e/k8s.rs"]
mod k8s;
#[path = "e2e/keepalive_limits.rs"]
mod keepalive_limits;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/measure.rs"]
mod measure;
#[path = "e2e/nginx.rs"]
mod nginx;
#[path = "e2e/nginx_compat.rs"]
mod nginx_compat;
#[path = "e2e/pin.rs"]
mod pin;
#[path = "e2e/request_body.rs"]
mod request_body;
#[path = "e2e/resources.rs"]
mod resources;
#[path = "e2e/rustls_client.rs"]
mod rustls_client;
#[path = "e2e/second_module.rs"]
mod second_module;
#[path = "e2e/server_tls.rs"]
mod server_tls;
#[path = "e2e/sidecar.rs"]
mod sidecar;
#[path = "e2e/stapling.rs"]
mod stapling;
#[path = "e2e/status_ui.rs"]
mod status_ui;
#[path = "e2e/strict.rs"]
mod strict;
#[path = "e2e/tenants.rs"]
mod tenants;
#[path = "e2e/tickets.rs"]
mod tickets;
#[path = "e2e/tls_probes.rs"]
mod tls_probes;
#[path = "e2e/token_cmd.rs"]
mod token_cmd;
#[path = "e2e/toml_groups.rs"]
mod toml_groups;
#[path = "e2e/upstream_answers.rs"]
mod upstream_answers;
#[path = "e2e/upstream_tls.rs"]
mod upstream_tls;
#[path = "e2e/websocket.rs"]
mod websocket;
