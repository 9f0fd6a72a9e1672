"""TLS material for the local cluster: one CA and a certificate per identity, made with openssl.

Why one CA: every component (API server, kubelet, kube-proxy, the admin user) trusts the same
root, which is all a single-machine cluster needs, and the client certificates' subjects carry the
identities Kubernetes authorizes: `O=system:masters` for the admin (and the API server's calls to
the kubelet), `CN=system:node:<node>,O=system:nodes` for the kubelet (the Node authorizer, no
bootstrap token) and `CN=system:kube-proxy` (bound to system:node-proxier by default).
Standard library plus the `openssl` command, so it runs before the venv exists.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

# Names the API server is reached by: loopback for us, the Service VIP and DNS names for pods.
API_DNS_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(pki: Path, name: str, subject: str, usage: str, ips: tuple[str, ...] = (),
           dns: tuple[str, ...] = ()) -> None:
    """`name.key` + `name.crt` signed by the CA, for `usage` serverAuth or clientAuth."""
    ext = f"extendedKeyUsage={usage}\n"
    sans = [f"IP:{ip}" for ip in ips] + [f"DNS:{d}" for d in dns]
    if sans:
        ext = f"subjectAltName={','.join(sans)}\n" + ext
    (pki / f"{name}.ext").write_text(ext)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subject, cwd=pki)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "3650", "-extfile", f"{name}.ext", cwd=pki)


def generate_control_plane(pki: Path, api_ips: tuple[str, ...]) -> None:
    """The CA, the API server's serving cert (for `api_ips`), the admin client cert, the SA key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "3650", "-subj", "/CN=modeldeploy-local-ca", cwd=pki)
    _issue(pki, "apiserver", "/CN=kube-apiserver", "serverAuth", ips=api_ips, dns=API_DNS_NAMES)
    _issue(pki, "admin", "/O=system:masters/CN=modeldeploy-admin", "clientAuth")
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def generate_node(pki: Path, node_name: str, node_ip: str) -> None:
    """The kubelet's client and serving certs and kube-proxy's client cert, from the same CA."""
    _issue(pki, "kubelet", f"/O=system:nodes/CN=system:node:{node_name}", "clientAuth")
    _issue(pki, "kubelet-serving", f"/CN={node_name}", "serverAuth", ips=(node_ip,), dns=(node_name,))
    _issue(pki, "kube-proxy", "/CN=system:kube-proxy", "clientAuth")


def kubeconfig_text(server: str, pki: Path, user: str = "admin") -> str:
    """A kubeconfig for `server` authenticating with `<user>.crt`/`<user>.key` from `pki`."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: modeldeploy-local
  cluster:
    server: {server}
    certificate-authority: {pki / 'ca.crt'}
users:
- name: {user}
  user:
    client-certificate: {pki / f'{user}.crt'}
    client-key: {pki / f'{user}.key'}
contexts:
- name: modeldeploy-local
  context: {{cluster: modeldeploy-local, user: {user}}}
current-context: modeldeploy-local
"""
