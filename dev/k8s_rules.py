"""Checks a rendered overlay (dev/k8s.sh check) for what the Kubernetes
schemas cannot see: the rules Quarry's manifests keep.

Usage: python dev/k8s_rules.py OVERLAY RENDERED.yaml  (exit 1 naming every
broken rule). OVERLAY is `split` (a Deployment per role) or `single` (one
Deployment, every role).
"""

import sys
import tomllib
from urllib.parse import urlparse

import yaml

ROLES = ["assistant", "sql", "search", "summary", "sync"]
# Roles whose replicas elect a leader (PostgreSQL advisory locks): never
# autoscaled in the split layout.
LEADER_ROLES = {"summary", "sync"}
# The gRPC service each role's readiness probe asks grpc.health.v1 about.
SERVICE_OF = {
    "assistant": "quarry.v1.AssistantService",
    "sql": "quarry.v1.SqlService",
    "search": "quarry.v1.SearchService",
    "summary": "quarry.v1.SummaryService",
}
PORT = 50051

errors = []


def fail(message):
    errors.append(message)


def roles_of(container):
    """The roles `quarry serve` plays with these args (none given: all)."""
    args = container.get("args", [])
    if not args or args[0] != "serve":
        return None
    roles = [args[i + 1] for i, a in enumerate(args) if a == "--role" and i + 1 < len(args)]
    return set(roles) if roles else set(ROLES)


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def main(overlay, path):
    with open(path, encoding="utf-8") as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    deployments = by_kind.get("Deployment", {})
    services = by_kind.get("Service", {})
    config_maps = by_kind.get("ConfigMap", {})
    pvcs = by_kind.get("PersistentVolumeClaim", {})

    roles_by_deployment = {}
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        if not selects(d["spec"]["selector"]["matchLabels"], labels):
            fail(f"deployment {name}: selector does not match its pods")
        security = pod.get("securityContext", {})
        if security.get("runAsNonRoot") is not True:
            fail(f"deployment {name}: pod securityContext.runAsNonRoot is not true")
        if pod.get("automountServiceAccountToken") is not False:
            fail(f"deployment {name}: mounts a service account token it does not use")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for v in volumes.values():
            if "configMap" in v and v["configMap"]["name"] not in config_maps:
                fail(f"deployment {name}: volume {v['name']} names a missing ConfigMap")
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            if claim is not None and claim not in pvcs:
                fail(f"deployment {name}: volume {v['name']} names a missing claim {claim}")
        for c in pod["containers"]:
            roles = roles_of(c)
            if roles is None:
                fail(f"deployment {name}: container {c['name']} does not run `quarry serve`")
                continue
            roles_by_deployment[name] = roles
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                fail(f"deployment {name}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(f"deployment {name}: allowPrivilegeEscalation is not false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                fail(f"deployment {name}: capabilities are not all dropped")
            res = c.get("resources", {})
            if not res.get("requests", {}).get("cpu") or not res.get("limits", {}).get("memory"):
                fail(f"deployment {name}: no cpu request or memory limit")
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"]:
                grpc = c.get(probe, {}).get("grpc")
                if not grpc or grpc.get("port") != PORT:
                    fail(f"deployment {name}: {probe} is not a gRPC probe on port {PORT}")
            expected = [SERVICE_OF[r] for r in ROLES if r in roles and r in SERVICE_OF]
            ready = c.get("readinessProbe", {}).get("grpc", {}).get("service")
            if expected and ready not in expected:
                fail(f"deployment {name}: readiness asks about {ready!r}, not one of {expected}")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            if "/etc/quarry" not in mounts or "configMap" not in volumes.get(mounts["/etc/quarry"], {}):
                fail(f"deployment {name}: the config is not mounted at /etc/quarry")
            if roles & {"sql", "search", "summary", "sync"} and "/models" not in mounts:
                fail(f"deployment {name}: embedding roles without the model at /models")
            if roles & {"search", "sync"} and "/var/lib/quarry/search" not in mounts:
                fail(f"deployment {name}: no writable search index dir")
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if env.get("QUARRY_CONFIG") != "/etc/quarry/quarry.toml":
                fail(f"deployment {name}: QUARRY_CONFIG is not /etc/quarry/quarry.toml")
            if not any("secretRef" in e for e in c.get("envFrom", [])):
                fail(f"deployment {name}: credentials do not come from a Secret")

    # Every role is played, by a Deployment of its own (split) or one (single).
    played = set().union(*roles_by_deployment.values()) if roles_by_deployment else set()
    if played != set(ROLES):
        fail(f"roles played {sorted(played)}, expected {ROLES}")
    if overlay == "split":
        for role in ROLES:
            if [n for n, r in roles_by_deployment.items() if r == {role}] == []:
                fail(f"split: no Deployment plays just {role}")
    elif overlay == "single" and len(deployments) != 1:
        fail(f"single: {len(deployments)} Deployments, expected one")

    def pods_of(selector):
        return [
            n
            for n, d in deployments.items()
            if selects(selector, d["spec"]["template"]["metadata"]["labels"])
        ]

    for name, s in services.items():
        if not pods_of(s["spec"].get("selector", {})):
            fail(f"service {name}: selects no Deployment's pods")
    for name, p in by_kind.get("PodDisruptionBudget", {}).items():
        if not pods_of(p["spec"]["selector"]["matchLabels"]):
            fail(f"pdb {name}: selects no Deployment's pods")
    covered = {
        n for p in by_kind.get("PodDisruptionBudget", {}).values()
        for n in pods_of(p["spec"]["selector"]["matchLabels"])
    }
    for name in deployments:
        if name not in covered:
            fail(f"deployment {name}: no PodDisruptionBudget")

    # Autoscaling: the stateless roles, never a Deployment of only
    # leader-electing roles.
    scaled = set()
    for name, h in by_kind.get("HorizontalPodAutoscaler", {}).items():
        target = h["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            fail(f"hpa {name}: targets missing Deployment {target}")
            continue
        scaled.add(target)
        if roles_by_deployment.get(target, set()) <= LEADER_ROLES:
            fail(f"hpa {name}: autoscales {target}, which only elects leaders")
    for name, roles in roles_by_deployment.items():
        if roles & {"assistant", "sql", "search"} and name not in scaled:
            fail(f"deployment {name}: stateless roles {sorted(roles)} without an autoscaler")

    # The config: the tool URLs name Services of this overlay on the gRPC
    # port, selecting pods that play that role.
    for cm in config_maps.values():
        text = cm.get("data", {}).get("quarry.toml")
        if text is None:
            continue
        server = tomllib.loads(text).get("server", {})
        if server.get("listen") != f"0.0.0.0:{PORT}":
            fail(f"quarry.toml: server.listen is {server.get('listen')!r}, not 0.0.0.0:{PORT}")
        for role in ["sql", "search", "summary"]:
            url = server.get(f"{role}_url")
            if overlay == "single" and url:
                fail(f"single: server.{role}_url is set ({url}); the tools are in process")
            if overlay == "split" and not url:
                fail(f"split: server.{role}_url is not set")
            if not url:
                continue
            parsed = urlparse(url)
            s = services.get(parsed.hostname)
            if s is None:
                fail(f"quarry.toml: server.{role}_url names no Service ({parsed.hostname})")
                continue
            if parsed.port not in [p["port"] for p in s["spec"]["ports"]]:
                fail(f"quarry.toml: server.{role}_url port {parsed.port} is not a port of {s['metadata']['name']}")
            targets = pods_of(s["spec"]["selector"])
            if not any(role in roles_by_deployment.get(t, set()) for t in targets):
                fail(f"quarry.toml: server.{role}_url reaches pods that do not play {role}")

    # Only the assistant reaches the tool roles (split layout).
    if overlay == "split":
        policies = by_kind.get("NetworkPolicy", {}).values()
        for name, roles in roles_by_deployment.items():
            if "assistant" in roles:
                continue
            labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
            governing = [p for p in policies if matches(p["spec"]["podSelector"], labels)]
            if not any("Ingress" in p["spec"].get("policyTypes", []) for p in governing):
                fail(f"networkpolicy: {name} ({sorted(roles)}) accepts ingress from anyone")
            for p in governing:
                for rule in p["spec"].get("ingress", []):
                    sources = rule.get("from")
                    if not sources:
                        fail(f"networkpolicy {p['metadata']['name']}: lets anyone reach {name}")
                        continue
                    for source in sources:
                        sel = source.get("podSelector")
                        if sel is None or "namespaceSelector" in source or "ipBlock" in source:
                            fail(f"networkpolicy {p['metadata']['name']}: lets non-pods reach {name}")
                            continue
                        for src in pods_of(sel.get("matchLabels", {})):
                            if "assistant" not in roles_by_deployment.get(src, set()):
                                fail(f"networkpolicy {p['metadata']['name']}: {src} may reach {name}")

    for e in errors:
        print(f"k8s_rules: {overlay}: {e}", file=sys.stderr)
    return 1 if errors else 0


def matches(selector, labels):
    """A LabelSelector (matchLabels and In/NotIn/Exists/DoesNotExist)."""
    if not selects(selector.get("matchLabels", {}), labels):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: k8s_rules.py OVERLAY RENDERED.yaml")
    sys.exit(main(sys.argv[1], sys.argv[2]))
