//! deploy/k8s checked offline (no cluster can run here):
//! - a schema check: `kubernetes-validate --strict` (PyPI; the Kubernetes 1.37 OpenAPI
//!   schemas, unknown fields rejected), skipped with a message where it is missing;
//! - a structural check written here, over the documents as JSON (PyYAML, which
//!   kubernetes-validate brings): what the sidecar issue asks of the manifests;
//! - hsmgate's own validation of what they configure: the ConfigMap's hsmgate.toml and
//!   the sidecar's HSMGATE_* variables become a valid Config.

use std::path::{Path, PathBuf};
use std::process::Command;

use hsmgate_config::{Overrides, PinSource};
use serde_json::Value;

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s")
}

const FILES: [&str; 2] = ["sidecar-pod.yaml", "gateway-deployment.yaml"];

/// The YAML documents of `file` as JSON, or None without python3 + PyYAML.
fn documents(file: &str) -> Option<Vec<Value>> {
    let script =
        "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(k8s_dir().join(file))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "SKIPPED: python3 with PyYAML is needed to read {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("JSON from python"))
}

#[test]
fn manifests_pass_the_kubernetes_schemas() {
    let Ok(out) = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .args(FILES.map(|f| k8s_dir().join(f)))
        .output()
    else {
        eprintln!(
            "SKIPPED: kubernetes-validate is not installed (pip3 install kubernetes-validate; scripts/deps.sh does)"
        );
        return;
    };
    assert!(
        out.status.success(),
        "kubernetes-validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn container<'a>(pod_spec: &'a Value, name: &str) -> &'a Value {
    pod_spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// What every hsmgate container and its pod must have.
fn check_hsmgate(pod_meta: &Value, pod_spec: &Value) {
    let c = container(pod_spec, "hsmgate");
    let admin = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("admin port");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 10001, "the image's UID");
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for r in ["requests", "limits"] {
        for k in ["cpu", "memory"] {
            assert!(c["resources"][r][k].is_string(), "resources.{r}.{k}");
        }
    }
    let notes = &pod_meta["annotations"];
    assert_eq!(notes["prometheus.io/scrape"], "true");
    assert_eq!(
        notes["prometheus.io/port"],
        admin["containerPort"].to_string()
    );
    assert_eq!(notes["prometheus.io/path"], "/metrics");
    // Every mount of the container is a volume of the pod; PINs come from Secrets.
    let volumes = pod_spec["volumes"].as_array().expect("volumes");
    for m in c["volumeMounts"].as_array().expect("mounts") {
        let v = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("no volume {}", m["name"]));
        if m["mountPath"]
            .as_str()
            .is_some_and(|p| p.starts_with("/run/secrets"))
        {
            assert!(v["secret"]["secretName"].is_string(), "{m} is a Secret");
            assert_eq!(m["readOnly"], true);
        }
    }
}

#[test]
fn sidecar_pod_has_what_a_sidecar_needs_and_its_variables_configure_hsmgate() {
    let Some(docs) = documents("sidecar-pod.yaml") else {
        return;
    };
    let pod = kind(&docs, "Pod");
    check_hsmgate(&pod["metadata"], &pod["spec"]);
    assert!(
        container(&pod["spec"], "app")["image"].is_string(),
        "an application container"
    );
    let c = container(&pod["spec"], "hsmgate");
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name").into(),
                e["value"].as_str().expect("value").into(),
            )
        })
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let overrides = Overrides::from_env(&env[..]).expect("the variables read");
    let config = overrides
        .load(None)
        .unwrap_or_else(|e| panic!("the sidecar's variables: {e}"));
    assert_eq!(
        config.pkcs11.expect("one token").pin,
        PinSource::File("/run/secrets/hsm/pin".into())
    );
    assert_eq!(config.admin.map(|a| a.port()), Some(9901));
    assert!(
        config.upstream.address.starts_with("127.0.0.1:"),
        "the app in the same pod"
    );
}

#[test]
fn gateway_deployment_pdb_and_configuration_fit_together() {
    let Some(docs) = documents("gateway-deployment.yaml") else {
        return;
    };
    let deployment = kind(&docs, "Deployment");
    let template = &deployment["spec"]["template"];
    check_hsmgate(&template["metadata"], &template["spec"]);
    assert!(
        deployment["spec"]["replicas"].as_u64() >= Some(2),
        "several replicas"
    );
    let labels = &template["metadata"]["labels"];
    let pdb = kind(&docs, "PodDisruptionBudget");
    for (k, v) in pdb["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("PDB selector")
    {
        assert_eq!(&labels[k], v, "the PDB selects the gateway pods");
    }
    assert!(pdb["spec"]["minAvailable"].as_u64() < deployment["spec"]["replicas"].as_u64());
    let toml = kind(&docs, "ConfigMap")["data"]["hsmgate.toml"]
        .as_str()
        .expect("hsmgate.toml");
    let config = hsmgate_config::load_str(toml, Path::new("/etc/hsmgate/hsmgate.toml"))
        .unwrap_or_else(|e| panic!("the ConfigMap's hsmgate.toml: {e}"));
    let group = (config.hsm.into_iter().next()).expect("one HA group shared by the replicas");
    let members: Vec<_> = group.regions.iter().flat_map(|r| &r.members).collect();
    assert!(members.len() >= 2);
    let c = container(&template["spec"], "hsmgate");
    let pins_mount = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == "hsm-pins")
        .expect("PIN mount");
    for m in members {
        let PinSource::File(pin) = &m.pin else {
            panic!("{}: PIN from a file", m.name)
        };
        assert!(
            pin.starts_with(pins_mount["mountPath"].as_str().expect("path")),
            "{}",
            pin.display()
        );
    }
    assert_eq!(
        config.admin.map(|a| a.port()),
        Some(9901),
        "the probes' port"
    );
}
