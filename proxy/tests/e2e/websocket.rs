//! WebSocket through hsmgate as nginx configurations write it (`map $http_upgrade
//! $connection_upgrade`, `proxy_set_header Upgrade/Connection`): Debian's python3
//! `websockets` as both the client (over TLS, the key on a SoftHSM token) and the echo
//! upstream. Messages go both ways; an idle tunnel is closed after `proxy_read_timeout`;
//! a location that does not forward `Upgrade` answers as plain HTTP and closes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::hsm::{KeyType, TestToken};
use crate::support::net::{curl, free_port};
use crate::support::nginx::Server;

const PYTHON: &str = "/usr/bin/python3";

const ECHO_SERVER: &str = r#"
import asyncio, sys, websockets
async def echo(ws, path=None):
    async for message in ws:
        await ws.send("echo " + message)
async def main():
    async with websockets.serve(echo, "127.0.0.1", int(sys.argv[1])):
        await asyncio.Future()
asyncio.run(main())
"#;

const CLIENT: &str = r#"
import asyncio, ssl, sys, time, websockets
async def main(url, ca, mode):
    ctx = ssl.create_default_context(cafile=ca)
    async with websockets.connect(url, ssl=ctx, server_hostname="localhost",
                                  ping_interval=None, open_timeout=10) as ws:
        if mode == "echo":
            for i in range(3):
                await ws.send("hello %d" % i)
                print(await asyncio.wait_for(ws.recv(), 5), flush=True)
            await ws.send("x" * 100000)
            print(len(await asyncio.wait_for(ws.recv(), 5)), flush=True)
        else:
            t = time.monotonic()
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed:
                print("closed after %.1f s" % (time.monotonic() - t), flush=True)
asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"#;

fn websockets_available() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import websockets"])
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(dir: &Path, url: &str, ca: &Path, mode: &str) -> String {
    let script = dir.join("ws_client.py");
    std::fs::write(&script, CLIENT).expect("client script");
    let out = Command::new(PYTHON)
        .arg(&script)
        .args([url, ca.to_str().expect("utf-8"), mode])
        .output()
        .expect("run the websocket client");
    assert!(
        out.status.success(),
        "websocket client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn websocket_upgrade_is_passed_through_like_nginx() {
    if !websockets_available() {
        eprintln!(
            "SKIPPED: Debian's python3-websockets is not installed (scripts/deps.sh installs it)"
        );
        return;
    }
    let token = TestToken::new(KeyType::Rsa2048);
    let d = token.path();
    let ws_port = free_port();
    let echo_script = d.join("ws_echo.py");
    std::fs::write(&echo_script, ECHO_SERVER).expect("echo script");
    let _echo = Kill(
        Command::new(PYTHON)
            .arg(&echo_script)
            .arg(ws_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the websocket echo server"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", ws_port)).is_err() {
        assert!(Instant::now() < deadline, "the echo server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let https = free_port();
    std::fs::create_dir_all(d.join("logs")).expect("logs");
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "env SOFTHSM2_CONF={softhsm};\npid {dir}/logs/nginx.pid;\nevents {{}}\nhttp {{\n    access_log {dir}/logs/access.log;\n\
             map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
             server {{\n        listen 127.0.0.1:{https} ssl;\n        ssl_certificate {chain};\n        \
             ssl_certificate_key \"pkcs11:token={label};object=tls;type=private?pin-source=file:{pin}\";\n        \
             location /ws {{\n            proxy_pass http://127.0.0.1:{ws_port};\n            proxy_http_version 1.1;\n            \
             proxy_set_header Upgrade $http_upgrade;\n            proxy_set_header Connection $connection_upgrade;\n        }}\n        \
             location /idle {{\n            proxy_pass http://127.0.0.1:{ws_port};\n            proxy_http_version 1.1;\n            \
             proxy_set_header Upgrade $http_upgrade;\n            proxy_set_header Connection $connection_upgrade;\n            \
             proxy_read_timeout 1s;\n        }}\n        \
             location /plain {{ proxy_pass http://127.0.0.1:{ws_port}; }}\n    }}\n}}\n",
            softhsm = token.conf.display(),
            dir = d.display(),
            chain = token.chain_pem.display(),
            label = token.label,
            pin = token.pin_file.display(),
        ),
    )
    .expect("conf");
    let server = Server::hsmgate_with_env(
        d,
        &conf,
        &[https],
        &[("HSMGATE_PKCS11_MODULE", &token.module)],
    );

    // Messages both ways, small and 100 kB (several TLS records and WebSocket frames).
    let out = client(
        d,
        &format!("wss://127.0.0.1:{https}/ws"),
        &token.ca_pem,
        "echo",
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["echo hello 0", "echo hello 1", "echo hello 2", "100005"],
        "{}",
        server.log_text()
    );
    // An idle tunnel is closed after proxy_read_timeout (1 s here), not held forever.
    let out = client(
        d,
        &format!("wss://127.0.0.1:{https}/idle"),
        &token.ca_pem,
        "idle",
    );
    let secs: f64 = out
        .trim()
        .strip_prefix("closed after ")
        .and_then(|s| s.strip_suffix(" s"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the idle tunnel was not closed: {out}"));
    assert!(secs < 8.0, "closed only after {secs} s");

    // Without `proxy_set_header Upgrade` the request is plain HTTP to the upstream (which
    // refuses it), and the connection closes after that answer, as the guard stopped
    // checking it.
    let out = curl(&[
        "-sS",
        "-i",
        "--cacert",
        token.ca_pem.to_str().expect("utf-8"),
        "-H",
        "Upgrade: websocket",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        &format!("https://localhost:{https}/plain"),
        "--resolve",
        &format!("localhost:{https}:127.0.0.1"),
        "--http1.1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(!text.starts_with("http/1.1 101"), "{text}");
    assert!(text.contains("connection: close"), "{text}");

    let log = std::fs::read_to_string(d.join("logs/access.log")).expect("access log");
    assert!(log.contains("\"GET /ws HTTP/1.1\" 101 "), "{log}");
}
