"""runtime_env working_dir, as in Ray: a local directory is shipped to the
workers, which run in their copy of it (current directory and imports),
with gitignore-style excludes; a job's runtime_env and a task's merge.

Runs against manta (default) or Ray (MANTA_TEST_BACKEND=ray); see conftest.py.
"""

import os

import pytest

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "pkg_data").mkdir(parents=True)
    (root / "notes.txt").write_text("shipped")
    (root / "wd_helper_mod.py").write_text("VALUE = 42\n")
    (root / "pkg_data" / "keep.txt").write_text("kept")
    (root / "pkg_data" / "drop.log").write_text("dropped")
    (root / "scratch").mkdir()
    (root / "scratch" / "big.bin").write_bytes(b"x" * 1000)
    return str(root)


def test_a_jobs_working_dir_is_where_its_tasks_and_actors_run(ray_clean, project):
    ray = ray_clean
    ray.init(num_cpus=2, runtime_env={"working_dir": project, "excludes": ["scratch/", "*.log"],
                                      "env_vars": {"FROM_JOB": "job"}})
    try:
        @ray.remote
        def look():
            import wd_helper_mod

            return (open("notes.txt").read(), wd_helper_mod.VALUE, os.path.exists("pkg_data/keep.txt"),
                    os.path.exists("pkg_data/drop.log"), os.path.exists("scratch"), os.getcwd(),
                    os.environ.get("FROM_JOB"), os.environ.get("FROM_TASK"))

        @ray.remote
        class Reader:
            def read(self):
                return open("notes.txt").read()

        text, value, kept, dropped, scratch, cwd, job_var, task_var = ray.get(
            look.options(runtime_env={"env_vars": {"FROM_TASK": "task"}}).remote(), timeout=120)
        assert (text, value, kept, dropped, scratch) == ("shipped", 42, True, False, False)
        assert cwd != project  # a copy, not the driver's directory
        assert (job_var, task_var) == ("job", "task")  # the job's and the task's env_vars merge
        assert ray.get(Reader.remote().read.remote(), timeout=120) == "shipped"
    finally:
        ray.shutdown()


def test_a_missing_working_dir_is_refused_at_init(ray_clean, tmp_path):
    ray = ray_clean
    with pytest.raises(ValueError):
        ray.init(num_cpus=1, runtime_env={"working_dir": str(tmp_path / "nowhere")})
    ray.shutdown()


def test_a_tasks_own_local_working_dir(ray_clean, project, backend_name):
    if backend_name == "ray":
        pytest.skip("beyond Ray: Ray uploads local directories only at the job level")
    ray = ray_clean
    ray.init(num_cpus=1)
    try:
        @ray.remote(runtime_env={"working_dir": project})
        def read():
            return open("notes.txt").read()

        assert ray.get(read.remote(), timeout=120) == "shipped"
    finally:
        ray.shutdown()
