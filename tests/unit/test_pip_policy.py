"""The admin's allowlist of runtime_env pip sources (node/pip_policy.py)."""

from manta._private.node.pip_policy import PipPolicy
from manta._private.protocol.runtime_env import PipSpec

INDEX = "https://pypi.internal.example/simple"


def spec(*packages, options=()):
    return PipSpec(packages=list(packages), install_options=list(options))


def test_no_allowlist_allows_anything_as_in_ray():
    policy = PipPolicy.of([], [])
    assert not policy.restricted
    assert policy.refusal(spec("git+https://evil.example/x.git", options=["-i", "https://evil.example"])) == ""
    assert policy.index_options(spec("requests")) == []


def test_packages_are_allowed_by_normalized_name_with_versions_extras_and_markers():
    policy = PipPolicy.of([], ["Requests", "zope.interface", "typing_extensions"])
    for ok in ("requests", "requests==2.31.0", "REQUESTS >=2,<3", "requests[socks]~=2.31",
               "zope-interface", "Typing.Extensions==4.0", 'requests; python_version >= "3.8"', "# a comment",
               "requests==2.31.0 --hash=sha256:58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f"):
        assert policy.refusal(spec(ok)) == "", ok
    why = policy.refusal(spec("requests", "evil-pkg==1.0"))
    assert "'evil-pkg' is not allowed" in why and "requests" in why


def test_requirements_an_allowlist_cannot_check_are_refused():
    policy = PipPolicy.of([INDEX], ["requests"])
    for bad in ("requests @ https://evil.example/requests.whl", "git+https://evil.example/requests.git",
                "./requests", "/tmp/requests", "requests-2.0-py3-none-any.whl", "requests.tar.gz",
                "file:///tmp/x", "requests==2.0 --config-settings=x"):
        assert policy.refusal(spec(bad)), bad
    for option in (["-r", "reqs.txt"], ["-e", "."], ["-c", "c.txt"], ["--trusted-host", "evil.example"],
                   ["--src", "/tmp"], ["--target", "/tmp"]):
        assert "is not allowed" in policy.refusal(spec("requests", options=option)), option
    assert "is not allowed" in policy.refusal(spec("requests", "--extra-index-url https://evil.example/simple"))


def test_indexes_must_be_on_the_list_and_the_first_is_used_when_none_is_named():
    policy = PipPolicy.of([INDEX + "/", "https://mirror.example/simple"], [])
    assert policy.refusal(spec("anything", options=["--index-url", INDEX])) == ""
    assert policy.refusal(spec("anything", options=["--extra-index-url=https://mirror.example/simple/"])) == ""
    assert policy.refusal(spec("anything", options=["--no-deps", "--only-binary", ":all:", "--pre"])) == ""
    why = policy.refusal(spec("anything", options=["-i", "https://evil.example/simple"]))
    assert "the pip index 'https://evil.example/simple' is not allowed" in why and INDEX in why
    assert "not allowed" in policy.refusal(spec("anything", options=["--find-links", "/tmp/wheels"]))
    # Never PyPI unasked: the first allowed index, unless the spec names one.
    assert policy.index_options(spec("anything")) == ["--index-url", INDEX]
    assert policy.index_options(spec("anything", options=["--extra-index-url", INDEX])) == ["--index-url", INDEX]
    assert policy.index_options(spec("anything", options=["-i", "https://mirror.example/simple"])) == []


def test_only_packages_restricted_means_only_the_default_index():
    policy = PipPolicy.of([], ["requests"])
    assert "only from its default index" in policy.refusal(spec("requests", options=["-i", "https://x.example"]))
    assert policy.index_options(spec("requests")) == []
