//! The Kubernetes packaging: the plain manifests in `dist/kubernetes/exfilmon.yaml` and
//! the Helm chart in `dist/helm/exfilmon`, rendered by a real `helm` (v4, which
//! scripts/setup.sh installs). One set of assertions for both: the pod runs in the node's
//! network namespace with CAP_BPF and CAP_NET_ADMIN and nothing else, no privilege
//! escalation, a read-only root; every path exfilmon writes is a node directory mounted
//! into it (the bpffs for the pins); the config is the one the container's arguments name
//! and `exfilmon check-config` accepts it; the port, the probes and the PodMonitor agree
//! with its `[metrics] listen`. No cluster is involved: what a cluster would do with the
//! objects (pull the image, attach) is not checked here; the confined daemon is host.rs.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use exfilmon_tests::workspace_root;
use monitor::config::Config;
use serde_json::Value;

/// The capabilities the container adds, and all it has.
const CAPABILITIES: [&str; 2] = ["BPF", "NET_ADMIN"];
/// The BPF maps take 246 MiB with the tor data and the default flow table (measured,
/// see the manifest), and they are charged to the pod's memory cgroup.
const MIN_MEMORY_LIMIT_MIB: u64 = 512;

fn chart_dir() -> PathBuf {
    workspace_root().join("dist/helm/exfilmon")
}

/// Every non-empty YAML document of `text`.
fn documents(text: &str, source: &str) -> Vec<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{source}: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The one document of `kind`.
fn one<'a>(docs: &'a [Value], kind: &str, source: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "{source}: one {kind}");
    found[0]
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `matchLabels` as a map, asserted non-empty.
fn labels(value: &Value, what: &str) -> BTreeMap<String, String> {
    let map: BTreeMap<String, String> = value
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    assert!(!map.is_empty(), "{what}: labels");
    map
}

/// `512Mi`, `1Gi` in MiB.
fn mebibytes(quantity: &Value) -> u64 {
    let text = quantity.as_str().unwrap_or_default();
    let (number, factor) = if let Some(n) = text.strip_suffix("Gi") {
        (n, 1024)
    } else if let Some(n) = text.strip_suffix("Mi") {
        (n, 1)
    } else {
        panic!("a memory quantity in Mi or Gi, not {quantity}")
    };
    number.parse::<u64>().expect("a whole number") * factor
}

/// The container: securityContext, as the pod spec and the container set it.
fn check_security(pod: &Value, c: &Value, source: &str) {
    let name = format!("{source}: container {}", c["name"]);
    let sc = &c["securityContext"];
    assert_ne!(sc["privileged"], true, "{name}: privileged");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
    let added: BTreeSet<&str> = strings(&sc["capabilities"]["add"]).into_iter().collect();
    assert_eq!(added, CAPABILITIES.into(), "{name}: capabilities added");
    // The container's own setting wins over the pod's.
    let pick = |key: &str| {
        Some(&sc[key])
            .filter(|v| !v.is_null())
            .unwrap_or(&pod["securityContext"][key])
    };
    assert_eq!(pick("seccompProfile")["type"], "RuntimeDefault", "{name}");
    // Kubernetes has no ambient capabilities: a non-root uid gets none in its effective
    // set, and root owns the node's bpffs (mode 0700).
    assert_eq!(
        pick("runAsUser"),
        0,
        "{name}: runs as uid 0 with two capabilities"
    );
}

/// The pod spec, apart from the container.
fn check_pod(ds: &Value, source: &str) -> BTreeMap<String, String> {
    assert_eq!(ds["apiVersion"], "apps/v1", "{source}");
    let template = &ds["spec"]["template"];
    let pod = &template["spec"];
    assert_eq!(pod["hostNetwork"], true, "{source}: the node's interfaces");
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet", "{source}");
    assert_eq!(pod["automountServiceAccountToken"], false, "{source}");
    for key in ["hostPID", "hostIPC"] {
        assert_ne!(pod[key], true, "{source}: {key}");
    }
    let tolerations = pod["tolerations"].as_array().cloned().unwrap_or_default();
    assert!(
        tolerations.contains(&serde_json::json!({"operator": "Exists"})),
        "{source}: tolerates every taint, to run on every node: {tolerations:?}"
    );
    let pod_labels = labels(&template["metadata"]["labels"], source);
    for (k, v) in labels(&ds["spec"]["selector"]["matchLabels"], source) {
        assert_eq!(pod_labels.get(&k), Some(&v), "{source}: the selector's {k}");
    }
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{source}: one container");
    for c in containers
        .iter()
        .chain(pod["initContainers"].as_array().into_iter().flatten())
    {
        check_security(pod, c, source);
    }
    pod_labels
}

/// The node directory mounted at the longest mount path above `path`: (mount, volume).
fn mount_of<'a>(pod: &'a Value, path: &Path) -> Option<(&'a Value, &'a Value)> {
    let mounts = pod["containers"][0]["volumeMounts"].as_array()?;
    let mount = mounts
        .iter()
        .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap_or("\0")))
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))?;
    let volume = pod["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == mount["name"])?;
    Some((mount, volume))
}

/// A writable node directory holds `path`, so that it outlives the pod.
fn assert_on_node(pod: &Value, path: &Path, what: &str) {
    let (mount, volume) = mount_of(pod, path).unwrap_or_else(|| {
        panic!(
            "{what} {} is on no mounted volume: the root is read-only",
            path.display()
        )
    });
    assert_ne!(mount["readOnly"], true, "{what}: {mount}");
    assert!(
        volume["hostPath"]["path"].is_string(),
        "{what}: a node directory: {volume}"
    );
}

/// The config the container's arguments name, from its ConfigMap, checked by exfilmon.
fn check_config(docs: &[Value], pod: &Value, dir: &Path, source: &str) -> Config {
    let c = &pod["containers"][0];
    let command = strings(&c["command"]);
    assert!(
        command.len() == 1 && command[0].ends_with("/exfilmon"),
        "{source}: {command:?}"
    );
    let args = strings(&c["args"]);
    assert!(
        args.len() == 3 && args[..2] == ["run", "--config"],
        "{source}: {args:?}"
    );
    let path = Path::new(args[2]);
    let (mount, volume) = mount_of(pod, path).expect("the config is mounted");
    assert_eq!(
        Some(mount["mountPath"].as_str().unwrap_or("")),
        path.parent().and_then(Path::to_str)
    );
    let map_name = &volume["configMap"]["name"];
    let map = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == *map_name)
        .unwrap_or_else(|| panic!("{source}: no ConfigMap {map_name}"));
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .expect("a file name");
    let text = map["data"][file]
        .as_str()
        .unwrap_or_else(|| panic!("{source}: {map_name} has no {file}"));
    let local = dir.join(file);
    std::fs::write(&local, text).expect("write the config");
    let out = Command::new(exfilmon_tests::exfilmon_bin())
        .args(["check-config", "--config"])
        .arg(&local)
        .output()
        .expect("exfilmon check-config runs");
    assert!(
        out.status.success(),
        "{source}: exfilmon check-config: {out:?}"
    );
    println!("{source}: {}", String::from_utf8_lossy(&out.stdout).trim());
    Config::load(&local).expect("the config that check-config accepted loads")
}

/// What `exfilmon run` writes, the port and the probes, against the pod.
fn check_paths_and_port(pod: &Value, config: &Config, source: &str) -> String {
    assert!(
        config.pin.enabled,
        "{source}: pinned, so a restarted pod takes over"
    );
    let (bpffs, volume) = mount_of(pod, &config.pin.dir).expect("the pin directory is mounted");
    assert_eq!(
        bpffs["mountPath"], "/sys/fs/bpf",
        "{source}: [pin] dir on the bpffs mount"
    );
    assert_eq!(
        volume["hostPath"]["path"], "/sys/fs/bpf",
        "{source}: the node's bpffs"
    );
    // Bidirectional is for privileged containers only; exfilmon makes no mounts.
    assert_eq!(bpffs["mountPropagation"], "HostToContainer", "{source}");
    assert_on_node(pod, &config.pin.dir, "[pin] dir");
    assert_on_node(pod, &config.detections.state_dir, "[detections] state_dir");
    let log = config.events.log.as_deref().expect("an event log");
    assert_on_node(pod, log.parent().expect("a directory"), "[events] log");
    assert!(!config.interfaces.is_empty(), "{source}: interfaces");
    for i in &config.interfaces {
        assert_eq!(i.netns, None, "{source}: netns needs CAP_SYS_ADMIN");
    }

    let listen = config.metrics.listen;
    assert!(
        !listen.ip().is_loopback(),
        "{source}: Prometheus must reach {listen}"
    );
    let c = &pod["containers"][0];
    let port = c["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "metrics"))
        .unwrap_or_else(|| panic!("{source}: a port named metrics"));
    assert_eq!(
        port["containerPort"],
        listen.port(),
        "{source}: [metrics] listen"
    );
    assert_eq!(port["hostPort"], listen.port(), "{source}: hostNetwork");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        assert!(
            get["port"] == "metrics" || get["port"] == listen.port(),
            "{source}: {probe}"
        );
        // The paths exfilmon serves (monitor/src/metrics.rs).
        assert!(
            ["/", "/metrics"].contains(&get["path"].as_str().unwrap_or("")),
            "{source}: {probe}"
        );
    }
    let resources = &c["resources"];
    assert!(
        mebibytes(&resources["limits"]["memory"]) >= MIN_MEMORY_LIMIT_MIB
            && mebibytes(&resources["requests"]["memory"])
                <= mebibytes(&resources["limits"]["memory"]),
        "{source}: memory for the maps: {resources}"
    );
    format!("{listen}")
}

/// The PodMonitor scrapes the DaemonSet's pods on the container's metrics port.
fn check_pod_monitor(pm: &Value, pod_labels: &BTreeMap<String, String>, source: &str) {
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1", "{source}");
    for (k, v) in labels(&pm["spec"]["selector"]["matchLabels"], source) {
        assert_eq!(
            pod_labels.get(&k),
            Some(&v),
            "{source}: the PodMonitor selects {k}"
        );
    }
    let endpoints = pm["spec"]["podMetricsEndpoints"]
        .as_array()
        .expect("endpoints");
    assert!(
        endpoints.iter().any(|e| e["port"] == "metrics"
            && ["/metrics", ""].contains(&e["path"].as_str().unwrap_or(""))),
        "{source}: scrapes port metrics at /metrics: {endpoints:?}"
    );
}

/// Every check above on the documents of one source; whether it has a PodMonitor.
fn check_documents(docs: &[Value], pod_monitor: bool, source: &str) {
    let ds = one(docs, "DaemonSet", source);
    let pod_labels = check_pod(ds, source);
    let pod = &ds["spec"]["template"]["spec"];
    let dir = tempfile::tempdir().expect("tempdir");
    let config = check_config(docs, pod, dir.path(), source);
    let listen = check_paths_and_port(pod, &config, source);
    let monitors: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "PodMonitor").collect();
    if pod_monitor {
        check_pod_monitor(one(docs, "PodMonitor", source), &pod_labels, source);
    } else {
        assert!(monitors.is_empty(), "{source}: no PodMonitor");
    }
    println!(
        "{source}: {} documents; hostNetwork, capabilities {CAPABILITIES:?} only, \
         /sys/fs/bpf mounted, {} interfaces, metrics on {listen}{}",
        docs.len(),
        config.interfaces.len(),
        if pod_monitor { ", PodMonitor" } else { "" }
    );
}

fn helm(args: &[&str]) -> Output {
    Command::new(std::env::var_os("HELM_BIN").unwrap_or_else(|| "helm".into()))
        .args(args)
        .output()
        .expect("helm runs (scripts/setup.sh installs it; HELM_BIN names another)")
}

/// `helm template` of the chart with `args`, which must succeed.
fn render(args: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut all = vec![
        "template",
        "exfilmon",
        chart.to_str().expect("a UTF-8 path"),
    ];
    all.extend(args);
    let out = helm(&all);
    assert!(
        out.status.success(),
        "helm {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    documents(
        &String::from_utf8_lossy(&out.stdout),
        &format!("helm template {args:?}"),
    )
}

#[test]
fn the_kubernetes_manifest_runs_exfilmon_with_cap_bpf_and_net_admin_only() {
    let path = workspace_root().join("dist/kubernetes/exfilmon.yaml");
    let text = std::fs::read_to_string(&path).expect("the manifest is readable");
    let docs = documents(&text, "dist/kubernetes/exfilmon.yaml");
    assert_eq!(
        docs.len(),
        3,
        "a ConfigMap, the DaemonSet and its PodMonitor"
    );
    check_documents(&docs, true, "dist/kubernetes/exfilmon.yaml");
    let image = &one(&docs, "DaemonSet", "")["spec"]["template"]["spec"]["containers"][0]["image"];
    assert!(
        image
            .as_str()
            .is_some_and(|i| i.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION")))),
        "the image tag is this version: {image}"
    );
}

#[test]
fn the_helm_chart_lints_and_renders_the_same_pod() {
    let chart = chart_dir();
    let out = helm(&["lint", "--strict", chart.to_str().expect("a UTF-8 path")]);
    assert!(
        out.status.success(),
        "helm lint --strict: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let meta: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart.join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml parses");
    assert_eq!(meta["apiVersion"], "v2");
    assert_eq!(
        meta["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion"
    );

    check_documents(&render(&[]), false, "helm template (defaults)");
    check_documents(
        &render(&["--set", "podMonitor.enabled=true"]),
        true,
        "helm template (PodMonitor)",
    );
    // Values that must not loosen anything: labels that try to replace the selector's,
    // another port and interface, xdp.
    let docs = render(&[
        "--set",
        "podMonitor.enabled=true",
        "--set-string",
        "podLabels.app\\.kubernetes\\.io/name=other,commonLabels.app\\.kubernetes\\.io/instance=other",
        "--set",
        "interfaces[0].name=ens5,interfaces[0].hook=xdp,interfaces[0].mode=native",
        "--set-string",
        "config=[home]\nnetworks = [\"192.0.2.0/24\"]\n[metrics]\nlisten = \"[::]:9999\"\n\
         [events]\nlog = \"/var/log/exfilmon/e.jsonl\"\n",
    ]);
    check_documents(&docs, true, "helm template (values set)");
    let pod = &one(&docs, "DaemonSet", "")["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], 9999);
}

#[test]
fn the_helm_chart_refuses_values_that_would_loosen_the_pod() {
    // The security fields are literal in the template: no value reaches them.
    let template = std::fs::read_to_string(chart_dir().join("templates/daemonset.yaml"))
        .expect("templates/daemonset.yaml");
    for key in [
        "hostNetwork:",
        "runAsUser:",
        "privileged:",
        "allowPrivilegeEscalation:",
        "readOnlyRootFilesystem:",
        "drop:",
        "add:",
        "mountPropagation:",
    ] {
        let lines: Vec<&str> = template
            .lines()
            .filter(|l| l.trim_start().starts_with(key))
            .collect();
        assert!(
            !lines.is_empty() && lines.iter().all(|l| !l.contains("{{")),
            "templates/daemonset.yaml: {key} literal: {lines:?}"
        );
    }
    // And values.schema.json refuses the keys a chart could have read them from.
    let chart = chart_dir();
    let chart = chart.to_str().expect("a UTF-8 path");
    for (set, why) in [
        (
            "securityContext.privileged=true",
            "additional properties 'securityContext'",
        ),
        ("hostNetwork=false", "additional properties 'hostNetwork'"),
        (
            "capabilities.add={SYS_ADMIN}",
            "additional properties 'capabilities'",
        ),
        ("interfaces[0].netns=lab", "'netns' not allowed"),
        (
            "config=[metrics]\nlisten = \"127.0.0.1:9477\"",
            "is the loopback",
        ),
        (
            "config=[home]\nnetworks = [\"10.0.0.0/8\"]",
            "[metrics] listen must be set",
        ),
    ] {
        let out = helm(&["template", "exfilmon", chart, "--set-string", set]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(why),
            "--set {set}: {err}"
        );
    }
}
