#!/usr/bin/python3
"""Checks of the deployment files that run without a Docker engine or a cluster.

  tools/check_deploy.py compose          docker-compose.yml: structure, pins, health, profiles
  tools/check_deploy.py compose-config   `docker-compose config -q` (Debian's 1.29), if installed
  tools/check_deploy.py k8s              deploy/k8s: kubeconform-style structural checks
  tools/check_deploy.py commands         worker command lines = deploy/commands.txt everywhere
  tools/check_deploy.py dashboard        Grafana dashboard + Prometheus scrape configuration
  tools/check_deploy.py dashboard-metrics URL...
                                         the dashboard queries only metrics and labels that
                                         these running /metrics endpoints export
  tools/check_deploy.py dockerfile       stages, non-root user, runtime packages, COPY sources
  tools/check_deploy.py conf-files DIR   writes the configuration files to validate with the
                                         real loader (tests/test_deploy.c runs `streamml config`)

Exit status: 0 ok, 1 a check failed (each failure printed), 77 skipped (tool missing).
Run from the repository root. Needs python3-yaml.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

COMPOSE = "docker-compose.yml"
K8S = "deploy/k8s"
COMMANDS = "deploy/commands.txt"
TOPICS = "deploy/topics.txt"
ENV_EXAMPLE = ".env.example"
LABELS = ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
          "app.kubernetes.io/part-of", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"]
WORKERS = ["transactions", "clickstream", "images"]
INFRA = ["kafka", "redis", "schema-registry"]

failures = []


def fail(msg):
    failures.append(msg)


def table(path):
    rows = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, rest = line.partition(" ")
            if not rest.strip():
                fail("%s:%d: expected '<name> <value>'" % (path, n))
            rows[key] = rest.strip()
    return rows


def commands():
    return {k: v.split() for k, v in table(COMMANDS).items()}


def topics():
    out = {}
    for k, v in table(TOPICS).items():
        if not v.isdigit() or int(v) < 1:
            fail("%s: %s: partitions %r" % (TOPICS, k, v))
        else:
            out[k] = int(v)
    return out


def load_compose():
    with open(COMPOSE) as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        fail("%s: no services" % COMPOSE)
        return {}
    return doc


def pinned(image):
    # ${VAR:-default} images are pinned by their default.
    m = re.search(r"\$\{[A-Z_]+:-([^}]+)\}", image)
    tag = m.group(1) if m else image.rpartition(":")[2] if ":" in image else ""
    return tag and tag != "latest" and not tag.startswith("$")


def check_compose():
    doc = load_compose()
    services = doc.get("services", {})
    if "name" in doc:
        fail("compose: top-level name: breaks docker-compose 1.29")
    for name, s in services.items():
        if not pinned(s.get("image", "")):
            fail("compose: %s: image %r is not pinned" % (name, s.get("image")))
        for dep, cond in (s.get("depends_on") or {}).items():
            c = cond.get("condition") if isinstance(cond, dict) else None
            if c not in ("service_healthy", "service_completed_successfully"):
                fail("compose: %s depends on %s without a health condition" % (name, dep))
            if c == "service_healthy" and "healthcheck" not in services.get(dep, {}):
                fail("compose: %s waits for %s to be healthy, which has no healthcheck" % (name, dep))
    for name in INFRA + ["prometheus"]:
        if "healthcheck" not in services.get(name, {}):
            fail("compose: %s has no healthcheck" % name)
    kafka = services.get("kafka", {})
    if not kafka.get("image", "").startswith("apache/kafka:"):
        fail("compose: kafka must be the official apache/kafka image")
    env = kafka.get("environment", {})
    if "controller" not in str(env.get("KAFKA_PROCESS_ROLES", "")):
        fail("compose: kafka is not in KRaft mode (KAFKA_PROCESS_ROLES)")
    init = services.get("kafka-init", {})
    if not any("deploy/topics.txt" in v for v in init.get("volumes", [])):
        fail("compose: kafka-init does not create the topics of %s" % TOPICS)
    for name in ("clickstream", "images", "alerts", "prometheus", "grafana"):
        if not services.get(name, {}).get("profiles"):
            fail("compose: optional service %s has no profile" % name)
    for w in WORKERS:
        deps = services.get(w, {}).get("depends_on") or {}
        for need in INFRA + ["kafka-init"]:
            if need not in deps:
                fail("compose: worker %s does not wait for %s" % (w, need))
    check_env_example()


def check_env_example():
    with open(COMPOSE) as f:
        text = f.read()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    have = set()
    with open(ENV_EXAMPLE) as f:
        for line in f:
            if "=" in line and not line.lstrip().startswith("#"):
                have.add(line.split("=", 1)[0].strip())
    for v in sorted(required - have):
        fail("%s: required variable %s is missing" % (ENV_EXAMPLE, v))
    for v in sorted(have - used):
        fail("%s: %s is not used by %s" % (ENV_EXAMPLE, v, COMPOSE))


def check_compose_config():
    tool = shutil.which("docker-compose")
    if not tool:
        print("skip: docker-compose not installed (Debian package docker-compose)")
        sys.exit(77)
    # Without profiles (the default services) and with every profile.
    for profiles in ([], ["monitoring", "clickstream", "images", "embedded"]):
        args = [tool, "--env-file", ENV_EXAMPLE, "-f", COMPOSE]
        for p in profiles:
            args += ["--profile", p]
        r = subprocess.run(args + ["config", "-q"], capture_output=True, text=True)
        if r.returncode != 0:
            fail("docker-compose config -q (profiles: %s): %s"
                 % (",".join(profiles) or "none", r.stderr.strip() or r.stdout.strip()))


def k8s_docs():
    docs = []
    for fn in sorted(os.listdir(K8S)):
        if not fn.endswith(".yaml") or fn == "kustomization.yaml":
            continue
        with open(os.path.join(K8S, fn)) as f:
            for d in yaml.safe_load_all(f):
                if d is not None:
                    docs.append((fn, d))
    return docs


def subset(a, b):
    return all(b.get(k) == v for k, v in a.items())


def conf_value(text, key):
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() == key:
            return v.strip()
    return None


def check_probe(where, c, kind, path):
    p = c.get(kind) or {}
    get = p.get("httpGet") or {}
    ports = {x.get("name") for x in c.get("ports", [])} | {x.get("containerPort") for x in c.get("ports", [])}
    if get.get("path") != path:
        fail("%s: %s must be httpGet %s" % (where, kind, path))
    elif get.get("port") not in ports:
        fail("%s: %s port %r is not a container port" % (where, kind, get.get("port")))


def check_container(where, c, cmds, comp):
    if not c.get("image"):
        fail("%s: no image" % where)
    if c.get("command") != cmds.get(comp) or c.get("args"):
        fail("%s: command %r is not deploy/commands.txt's %r" % (where, c.get("command"), cmds.get(comp)))
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(part) or {}):
                fail("%s: resources.%s.%s missing" % (where, part, r))
    check_probe(where, c, "livenessProbe", "/healthz")
    check_probe(where, c, "readinessProbe", "/readyz")


def check_deployment(where, d, cmds, ctx):
    spec = d.get("spec", {})
    tmpl = spec.get("template", {})
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    tlabels = (tmpl.get("metadata") or {}).get("labels") or {}
    comp = tlabels.get("app.kubernetes.io/component")
    if not sel or not subset(sel, tlabels):
        fail("%s: selector %r does not match the pod template labels" % (where, sel))
    pod = tmpl.get("spec", {})
    if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
        fail("%s: pods must run as non-root" % where)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if ctx["shutdown_ms"] is None or ctx["shutdown_ms"] >= grace * 1000:
        fail("%s: worker.shutdown_timeout_ms (%s) must be below terminationGracePeriodSeconds %s"
             % (where, ctx["shutdown_ms"], grace))
    vols = {v.get("name"): v for v in pod.get("volumes", [])}
    for c in pod.get("containers", []):
        cw = "%s container %s" % (where, c.get("name"))
        check_container(cw, c, cmds, comp)
        for m in c.get("volumeMounts", []):
            if m.get("name") not in vols:
                fail("%s: mount of unknown volume %s" % (cw, m.get("name")))
        for e in c.get("env", []):
            ref = ((e.get("valueFrom") or {}).get("secretKeyRef")) or {}
            if ref and ref.get("key") not in ctx["secrets"].get(ref.get("name"), set()):
                fail("%s: env %s: no key %s in Secret %s" % (cw, e.get("name"), ref.get("key"), ref.get("name")))
    for v in vols.values():
        if "configMap" in v and v["configMap"].get("name") not in ctx["configmaps"]:
            fail("%s: volume %s: no ConfigMap %s" % (where, v["name"], v["configMap"].get("name")))
        if "secret" in v:
            name = v["secret"].get("secretName")
            for it in v["secret"].get("items", []):
                if it.get("key") not in ctx["secrets"].get(name, set()):
                    fail("%s: volume %s: no key %s in Secret %s" % (where, v["name"], it.get("key"), name))
    ctx["deployments"][d["metadata"]["name"]] = tlabels


def check_scaled(where, d, ctx, parts):
    spec = d.get("spec", {})
    target = (spec.get("scaleTargetRef") or {}).get("name")
    if target not in ctx["deployments"]:
        fail("%s: scaleTargetRef %s is not a Deployment here" % (where, target))
    comp = ctx["deployments"].get(target, {}).get("app.kubernetes.io/component")
    for t in spec.get("triggers", []):
        md = t.get("metadata", {})
        if t.get("type") != "kafka":
            fail("%s: trigger type %s, expected kafka (consumer-group lag)" % (where, t.get("type")))
            continue
        topic = md.get("topic")
        if topic not in parts:
            fail("%s: topic %s is not in %s" % (where, topic, TOPICS))
        elif spec.get("maxReplicaCount", 100) > parts[topic]:
            fail("%s: maxReplicaCount %s exceeds the %d partitions of %s" %
                 (where, spec.get("maxReplicaCount"), parts[topic], topic))
        if md.get("consumerGroup") != "streamml-%s" % comp:
            fail("%s: consumerGroup %s is not the worker's group streamml-%s" % (where, md.get("consumerGroup"), comp))
        if str(md.get("allowIdleConsumers", "false")).lower() != "false":
            fail("%s: allowIdleConsumers must stay false (replicas capped at partitions)" % where)
        auth = (t.get("authenticationRef") or {}).get("name")
        if auth and auth not in ctx["auths"]:
            fail("%s: authenticationRef %s is not a TriggerAuthentication here" % (where, auth))


def check_k8s():
    cmds, parts = commands(), topics()
    docs = k8s_docs()
    ctx = {"deployments": {}, "configmaps": set(), "auths": set(), "secrets": {}, "shutdown_ms": None}
    for fn, d in docs:
        where = "%s: %s %s" % (fn, d.get("kind"), (d.get("metadata") or {}).get("name"))
        for k in ("apiVersion", "kind", "metadata"):
            if k not in d:
                fail("%s: missing %s" % (where, k))
        labels = (d.get("metadata") or {}).get("labels") or {}
        for l in LABELS:
            if l not in labels:
                fail("%s: missing label %s" % (where, l))
        if d.get("kind") == "ConfigMap":
            ctx["configmaps"].add(d["metadata"]["name"])
            conf = (d.get("data") or {}).get("streamml.conf", "")
            v = conf_value(conf, "worker.shutdown_timeout_ms")
            ctx["shutdown_ms"] = int(v) if v and v.isdigit() else 10000
        elif d.get("kind") == "Secret":
            ctx["secrets"][d["metadata"]["name"]] = set((d.get("stringData") or {}).keys()) | set((d.get("data") or {}).keys())
        elif d.get("kind") == "TriggerAuthentication":
            ctx["auths"].add(d["metadata"]["name"])
    kinds = {}
    for fn, d in docs:
        where = "%s: %s %s" % (fn, d.get("kind"), (d.get("metadata") or {}).get("name"))
        kinds.setdefault(d.get("kind"), []).append(d)
        if d.get("kind") == "Deployment":
            check_deployment(where, d, cmds, ctx)
    for fn, d in docs:
        where = "%s: %s %s" % (fn, d.get("kind"), (d.get("metadata") or {}).get("name"))
        if d.get("kind") == "PodDisruptionBudget":
            sel = (d.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
            if not any(subset(sel, l) for l in ctx["deployments"].values()):
                fail("%s: selector matches no Deployment" % where)
        elif d.get("kind") == "ScaledObject":
            check_scaled(where, d, ctx, parts)
    for w in WORKERS:
        for kind in ("Deployment", "PodDisruptionBudget", "ScaledObject"):
            if not any(x["metadata"]["name"] == "streamml-" + w for x in kinds.get(kind, [])):
                fail("k8s: no %s for worker %s" % (kind, w))
    with open(os.path.join(K8S, "kustomization.yaml")) as f:
        listed = set(yaml.safe_load(f).get("resources", []))
    files = {fn for fn in os.listdir(K8S) if fn.endswith(".yaml") and fn != "kustomization.yaml"}
    if listed != files:
        fail("kustomization.yaml resources %s != files %s" % (sorted(listed), sorted(files)))


def check_commands():
    cmds = commands()
    services = load_compose().get("services", {})
    for name, argv in cmds.items():
        if name not in services:
            fail("compose: no service %s (deploy/commands.txt)" % name)
        elif services[name].get("command") != argv or services[name].get("entrypoint"):
            fail("compose: %s command %r is not %r" % (name, services[name].get("command"), argv))
    k8s = {}
    for fn, d in k8s_docs():
        if d.get("kind") == "Deployment":
            comp = d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
            k8s[comp] = [c.get("command") for c in d["spec"]["template"]["spec"]["containers"]]
    for name, argv in cmds.items():
        if k8s.get(name) != [argv]:
            fail("k8s: %s command %r is not %r" % (name, k8s.get(name), argv))


def check_dashboard():
    with open("deploy/grafana/dashboards/streamml.json") as f:
        dash = json.load(f)
    titles = " | ".join(p.get("title", "") for p in dash.get("panels", [])).lower()
    for want in ("throughput", "latency", "psi", "alerts"):
        if want not in titles:
            fail("dashboard: no %s panel" % want)
    for p in dash.get("panels", []):
        for t in p.get("targets", []):
            if "streamml_" not in t.get("expr", ""):
                fail("dashboard: panel %s: expression without a streamml_ metric" % p.get("title"))
    with open("deploy/prometheus/prometheus.yml") as f:
        prom = yaml.safe_load(f)
    names = set()
    for job in prom.get("scrape_configs", []):
        for sd in job.get("dns_sd_configs", []):
            names.update(sd.get("names", []))
    for svc in list(commands().keys()):
        if svc not in names:
            fail("prometheus: service %s is not scraped" % svc)
    for fn in ("deploy/grafana/provisioning/datasources/prometheus.yml",
               "deploy/grafana/provisioning/dashboards/streamml.yml"):
        with open(fn) as f:
            yaml.safe_load(f)


def scraped(urls):
    """metric name -> label names, from running processes' /metrics (text format)."""
    import urllib.request
    out = {}
    for url in urls:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s", line)
            if not m:
                fail("metrics %s: unparsable line %r" % (url, line))
                continue
            labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2) or ""))
            out.setdefault(m.group(1), set()).update(labels)
    return out


def check_dashboard_metrics(urls):
    """Every metric and label the dashboard queries is exported by a running process
    (tests/test_dashboard.c passes a worker's and `streamml alerts`' /metrics URLs);
    labels may also come from the Prometheus job (relabel target labels, instance, job)."""
    have = scraped(urls)
    with open("deploy/prometheus/prometheus.yml") as f:
        prom = yaml.safe_load(f)
    target = {"instance", "job"}
    for job in prom.get("scrape_configs", []):
        for r in job.get("relabel_configs", []):
            if r.get("target_label"):
                target.add(r["target_label"])
    with open("deploy/grafana/dashboards/streamml.json") as f:
        dash = json.load(f)
    n = 0
    for p in dash.get("panels", []):
        for t in p.get("targets", []):
            expr, title = t.get("expr", ""), p.get("title")
            names = set(re.findall(r"\b((?:streamml|process)_[a-zA-Z0-9_]+)", expr))
            if not names:
                fail("dashboard: panel %s: %r queries no streamml_ or process_ metric"
                     % (title, expr))
            labels = set()
            for grp in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
                labels.update(x.strip() for x in grp.split(",") if x.strip())
            for sel in re.findall(r"\{([^}]*)\}", expr):
                labels.update(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=|!=|=~|!~)", sel))
            labels.update(re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}",
                                     t.get("legendFormat", "")))
            for name in sorted(names):
                n += 1
                if name not in have:
                    fail("dashboard: panel %s queries %s, which no process exports" % (title, name))
            own = set().union(*(have.get(x, set()) for x in names)) if names else set()
            for lb in sorted(labels - target - own):
                fail("dashboard: panel %s uses label %s, which neither %s nor the scrape job "
                     "carries" % (title, lb, ", ".join(sorted(names))))
    print("dashboard: %d metric uses checked against %d exported names" % (n, len(have)))


def check_dockerfile():
    """Multi-stage debian:12 -> debian:12-slim, non-root, runtime stage without -dev
    packages, every COPY source present, the worker command lines' programs built."""
    with open("Dockerfile") as f:
        text = f.read().replace("\\\n", " ")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    stages, cur = [], None
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), "?"), words[1])
            cur = {"image": image, "lines": []}
            stages.append(cur)
        elif cur is not None:
            cur["lines"].append(words)
    if len(stages) != 2 or stages[0]["image"] != "debian:12" or stages[1]["image"] != "debian:12-slim":
        fail("Dockerfile: expected a debian:12 build stage and a debian:12-slim run stage, got %s"
             % [st["image"] for st in stages])
        return
    run = stages[1]["lines"]
    users = [w[1] for w in run if w[0] == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        fail("Dockerfile: the run stage must end as a non-root USER")
    for w in run:
        if w[0] == "RUN" and any(x.endswith("-dev") or x == "build-essential" for x in w):
            fail("Dockerfile: the run stage installs build packages: %s" % " ".join(w))
    # One package list for the image and tools/deps.sh (deploy/packages/).
    for i, name in ((0, "build"), (1, "run")):
        src = "deploy/packages/%s.txt" % name
        if not any(w[0] == "COPY" and src in w for w in stages[i]["lines"]):
            fail("Dockerfile: the %s stage does not install from %s" % (name, src))
    with open("deploy/packages/run.txt") as f:
        for pkg in re.sub(r"#.*", "", f.read()).split():
            if pkg.endswith("-dev") or pkg == "build-essential":
                fail("deploy/packages/run.txt: build package %s at run time" % pkg)
    with open("tools/deps.sh") as f:
        if "deploy/packages/build.txt" not in f.read():
            fail("tools/deps.sh does not read deploy/packages/build.txt")
    for st in stages:
        for w in st["lines"]:
            if w[0] == "COPY" and not any(x.startswith("--from") for x in w):
                for src in w[1:-1]:
                    if not glob.glob(src):
                        fail("Dockerfile: COPY source %s does not exist" % src)
    check_shipped_defaults(stages[1]["lines"])
    progs = {argv[0] for argv in commands().values()}
    if "streamml" in progs and "build/streamml" not in text:
        fail("Dockerfile: does not build streamml")
    if "workers/*/" not in text:
        fail("Dockerfile: does not build every worker (workers/*/)")


def check_shipped_defaults(run):
    """Every file the configuration table names by default (models/...), or the image's
    configuration names instead, is copied into the image's working directory: a worker
    started with the image's configuration must find it (the images worker once exited
    with 'unable to open models/images/quality.json')."""
    workdir = [w[1] for w in run if w[0] == "WORKDIR"][-1]
    shipped = set()
    for w in run:
        if w[0] != "COPY" or any(x.startswith("--from") for x in w):
            continue
        dest = w[-1]
        for src in w[1:-1]:
            for fn in glob.glob(src):
                if os.path.isdir(fn):
                    for root, _, files in os.walk(fn):
                        for f in files:
                            rel = os.path.relpath(os.path.join(root, f), fn)
                            shipped.add(os.path.normpath(os.path.join(dest, rel)))
                elif dest.endswith("/"):
                    shipped.add(os.path.normpath(dest + os.path.basename(fn)))
                else:
                    shipped.add(os.path.normpath(dest))
    with open("common/base/cfg.c") as f:
        table = f.read()
    with open("deploy/config/streamml.conf") as f:
        conf = f.read()
    n = 0
    for key, default in re.findall(r'\{"([\w.]+)",\s*K_STR,[^"]*"(models/[^"]+)"', table):
        path = conf_value(conf, key) or default
        if not path or path.startswith("/"):
            continue
        n += 1
        if os.path.normpath(os.path.join(workdir, path)) not in shipped:
            fail("Dockerfile: %s = %s (the %s) is not copied into %s"
                 % (key, path, "image's configuration" if conf_value(conf, key) else
                    "configuration table's default", workdir))
    print("dockerfile: %d default model file(s) checked against %d shipped file(s)"
          % (n, len(shipped)))


def conf_files(out):
    """The image's file and the ConfigMap's, for the real loader to validate."""
    os.makedirs(out, exist_ok=True)
    shutil.copy("deploy/config/streamml.conf", os.path.join(out, "compose.conf"))
    for fn, d in k8s_docs():
        if d.get("kind") == "ConfigMap":
            with open(os.path.join(out, "k8s.conf"), "w") as f:
                f.write(d["data"]["streamml.conf"])


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    what = sys.argv[1]
    checks = {"compose": check_compose, "compose-config": check_compose_config, "k8s": check_k8s,
              "commands": check_commands, "dashboard": check_dashboard,
              "dockerfile": check_dockerfile}
    if what == "conf-files" and len(sys.argv) == 3:
        conf_files(sys.argv[2])
    elif what == "dashboard-metrics" and len(sys.argv) >= 3:
        check_dashboard_metrics(sys.argv[2:])
    elif what in checks:
        checks[what]()
    else:
        print(__doc__)
        return 2
    for f in failures:
        print("FAIL: " + f)
    if not failures:
        print("ok: %s" % what)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
