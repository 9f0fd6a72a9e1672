"""kopf's connection for `modeldeploy operator --context`: what handlers.connection_info takes from the
kubernetes client's loaded configuration (the bearer token and its scheme, TLS, the default namespace)."""

from __future__ import annotations

from kubernetes import client

from modeldeploy.handlers import connection_info


def test_bearer_token_and_tls_flags_are_carried() -> None:
    c = client.Configuration(host="https://10.0.0.1:6443", api_key={"authorization": "Bearer abc.def"})
    c.verify_ssl = False
    info = connection_info(c, "ml", trust_env=False)
    assert (info.server, info.scheme, info.token, info.insecure, info.default_namespace) == \
        ("https://10.0.0.1:6443", "Bearer", "abc.def", True, "ml")
    assert info.as_http_headers() == {"Authorization": "Bearer abc.def"}


def test_client_certificate_without_token() -> None:
    c = client.Configuration(host="https://127.0.0.1:6443")
    c.ssl_ca_cert, c.cert_file, c.key_file = "/pki/ca.crt", "/pki/admin.crt", "/pki/admin.key"
    info = connection_info(c, None, trust_env=True)
    assert (info.token, info.scheme, info.insecure, info.ca_path, info.certificate_path, info.private_key_path,
            info.default_namespace, info.trust_env) == \
        (None, None, False, "/pki/ca.crt", "/pki/admin.crt", "/pki/admin.key", None, True)
