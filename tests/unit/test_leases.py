from manta._private.scheduling import leases as lt
from manta._private.scheduling.resources import UNIT, to_units


def table(cpus=2, **extra):
    return lt.LeaseTable(to_units({"CPU": cpus, **extra}), max_idle_workers=4)


def req(i, cpus=1.0, owner="o", key=(), **extra):
    return lt.Request(i, owner, to_units({"CPU": cpus, **extra}), key)


def grants(cmds):
    return [c for c in cmds if isinstance(c, lt.Grant)]


def test_request_starts_worker_then_grants():
    t = table()
    cmds = t.request(req(1))
    assert cmds == [lt.StartWorker(())]
    cmds = t.worker_started(b"w1", ())
    assert grants(cmds) == [lt.Grant(1, 1, b"w1")]
    t.validate()


def test_cpu_limit_is_exact():
    t = table(cpus=2)
    for i in range(5):
        t.request(req(i))
    for w in (b"a", b"b", b"c"):
        t.worker_started(w, ())
    assert len(t.leases) == 2
    assert t.available["CPU"] == 0
    assert len(t.pending) == 3
    t.validate()


def test_returned_lease_goes_to_next_request_with_same_worker():
    t = table(cpus=1)
    t.request(req(1))
    t.worker_started(b"w", ())
    t.request(req(2))
    assert len(t.pending) == 1
    cmds = t.return_lease(1)
    assert grants(cmds) == [lt.Grant(2, 2, b"w")]
    t.validate()


def test_blocked_worker_lends_its_cpu():
    t = table(cpus=1)
    t.request(req(1))
    t.worker_started(b"w1", ())
    assert t.request(req(2)) == []
    cmds = t.blocked(b"w1")
    assert cmds == [lt.StartWorker(())]
    t.worker_started(b"w2", ())
    t.unblocked(b"w1")
    assert t.available["CPU"] == -UNIT  # overcommitted until someone returns
    t.return_lease(2)
    assert t.available["CPU"] == 0
    t.validate()


def test_custom_resources_gate_requests():
    t = table(cpus=4, gizmo=1)
    t.request(req(1, gizmo=1))
    t.request(req(2, gizmo=1))
    t.worker_started(b"a", ())
    t.worker_started(b"b", ())
    assert len(t.leases) == 1 and len(t.pending) == 1
    t.validate()


def test_fractional_cpus_do_not_drift():
    t = table(cpus=1)
    for i in range(1000):
        t.request(req(i, cpus=0.1))
        if i == 0:
            t.worker_started(b"w", ())
        lease_id = max(t.leases)
        t.return_lease(lease_id)
    assert t.available["CPU"] == UNIT


def test_worker_death_releases_resources():
    t = table(cpus=1)
    t.request(req(1))
    t.worker_started(b"w", ())
    t.worker_died(b"w")
    assert t.available["CPU"] == UNIT and not t.leases
    t.validate()


def test_owner_gone_stops_its_workers_and_drops_requests():
    t = table(cpus=1)
    t.request(req(1, owner="a"))
    t.worker_started(b"w", ())
    t.request(req(2, owner="a"))
    cmds = t.owner_gone("a")
    assert lt.StopWorker(b"w") in cmds
    assert not t.pending and not t.leases and t.available["CPU"] == UNIT
    t.validate()


def test_environment_keys_do_not_share_workers():
    t = table(cpus=2)
    t.request(req(1, key=(("A", "1"),)))
    t.worker_started(b"w", (("A", "1"),))
    t.return_lease(1)
    cmds = t.request(req(2, key=()))
    assert cmds == [lt.StartWorker(())]


def test_idle_pool_is_trimmed():
    t = lt.LeaseTable(to_units({"CPU": 8}), max_idle_workers=2)
    out = []
    for i in range(4):
        out += t.worker_started(bytes([i]), ())
    assert len([c for c in out if isinstance(c, lt.StopWorker)]) == 2
    t.validate()


def test_gpus_are_assigned_specific_ids_and_returned():
    t = lt.LeaseTable(to_units({"CPU": 4, "GPU": 2}))
    t.request(lt.Request(1, "o", to_units({"CPU": 1, "GPU": 1}), ()))
    g1 = grants(t.worker_started(b"a", ()))
    t.request(lt.Request(2, "o", to_units({"CPU": 1, "GPU": 1}), ()))
    g2 = grants(t.worker_started(b"b", ()))
    assert {g1[0].gpu_ids, g2[0].gpu_ids} == {(0,), (1,)}
    t.return_lease(g1[0].lease_id)
    again = grants(t.request(lt.Request(3, "o", to_units({"CPU": 1, "GPU": 1}), ())))
    assert again[0].worker_id == b"a" and again[0].gpu_ids == g1[0].gpu_ids
    t.validate()


def test_fractional_gpus_share_a_device():
    t = lt.LeaseTable(to_units({"CPU": 4, "GPU": 1}))
    ids = []
    for i, w in enumerate((b"a", b"b")):
        t.request(lt.Request(i, "o", to_units({"CPU": 1, "GPU": 0.5}), ()))
        ids += [g.gpu_ids for g in grants(t.worker_started(w, ()))]
    assert ids == [(0,), (0,)]
    assert t.gpu_free == [0]


def test_blocked_worker_lends_cpu_but_keeps_gpu():
    t = lt.LeaseTable(to_units({"CPU": 1, "GPU": 1}))
    t.request(lt.Request(1, "o", to_units({"CPU": 1, "GPU": 1}), ()))
    t.worker_started(b"a", ())
    t.blocked(b"a")
    assert t.available.get("CPU") == UNIT and t.available.get("GPU", 0) == 0
    t.validate()
    t.unblocked(b"a")
    t.return_lease(1)
    assert t.available == to_units({"CPU": 1, "GPU": 1})


def actor(i, cpus=0.0, gate_cpus=1.0, **extra):
    # Placed where gate_cpus are free, holding only `cpus` (as Ray places actors).
    return lt.Request(i, "head", to_units({"CPU": cpus, **extra}), (), for_actor=True,
                      gate=to_units({"CPU": gate_cpus}))


def test_an_actor_is_placed_where_a_cpu_is_free_and_holds_none():
    t = table(cpus=1)
    t.request(actor(1))
    assert t.worker_started(b"actor", ()) == [lt.Grant(1, 1, b"actor")]
    assert t.available["CPU"] == UNIT  # nothing held
    t.request(req(2))  # a task takes the CPU...
    t.worker_started(b"w", ())
    assert t.request(actor(3)) == [lt.Reclaim(2)]  # ...so the next actor waits for a free one
    assert t.return_lease(2) == [lt.Grant(3, 3, b"w")] and not t.pending
    t.validate()


def test_a_waiting_request_asks_other_owners_for_their_task_leases_back():
    # One owner reusing its leases task after task would hold the node
    # forever; a request of another owner that waits asks them back.
    t = table(cpus=2)
    t.request(req(1, owner="driver"))
    t.request(req(2, owner="driver"))
    t.worker_started(b"a", ())
    t.worker_started(b"b", ())
    for i in range(3, 6):
        assert t.request(req(i, owner="driver")) == []  # its own: nothing asked back
    assert t.request(actor(9)) == [lt.Reclaim(1)]
    assert t.request(req(10, owner="other")) == []  # lease 1 will do for the first who waits
    # The lease given back goes to an owner holding none, not to the driver's
    # older requests; the actor holds no CPU, so the next who waits runs too.
    assert t.return_lease(1) == [lt.Grant(9, 3, b"a"), lt.StartWorker(())]
    t.validate()


def test_a_request_that_can_never_fit_asks_nothing_back():
    t = table(cpus=1)
    t.request(req(1, owner="driver"))
    t.worker_started(b"a", ())
    assert t.request(req(2, cpus=4, owner="other")) == []
    t.validate()


def test_an_owner_whose_actors_hold_nothing_is_not_behind_a_task_stream():
    t = table(cpus=2)
    t.request(actor(1))
    t.worker_started(b"actor", ())
    t.request(req(2, owner="driver"))
    t.request(req(3, owner="driver"))
    t.worker_started(b"a", ())
    t.worker_started(b"b", ())
    t.request(req(4, owner="driver"))  # the driver's own requests wait first
    assert t.request(actor(5)) == [lt.Reclaim(2)]
    assert t.return_lease(2)[0] == lt.Grant(5, 4, b"a")
    t.validate()


def test_a_lease_granted_while_another_owner_waits_is_asked_back_at_once():
    t = table(cpus=1)
    t.request(req(1, owner="driver"))  # its worker is being started
    assert t.request(actor(2)) == []
    assert t.worker_started(b"a", ()) == [lt.Grant(1, 1, b"a"), lt.Reclaim(1)]
    t.validate()


def test_removed_bundle_stops_the_workers_using_it_and_frees_nothing_twice():
    t = table(cpus=2)
    assert t.reserve(to_units({"CPU": 2}))
    names = to_units({"CPU_group_0_pg": 2, "CPU_group_pg": 2})
    t.add_resources(names)
    t.request(lt.Request(1, "o", to_units({"CPU_group_0_pg": 1, "CPU_group_pg": 1}), ()))
    t.request(lt.Request(2, "o", to_units({"CPU_group_0_pg": 1, "CPU_group_pg": 1}), ()))
    t.worker_started(b"a", ())
    t.worker_started(b"b", ())
    assert len(t.leases) == 2
    t.request(lt.Request(3, "o", to_units({"CPU_group_0_pg": 1}), ()))  # waits for the bundle
    cmds = t.remove_resources(names)
    assert set(c for c in cmds if isinstance(c, lt.StopWorker)) == {lt.StopWorker(b"a"), lt.StopWorker(b"b")}
    assert not grants(cmds) and not t.leases
    assert not any(k.startswith("CPU_group") for k in (*t.total, *t.available))
    t.unreserve(to_units({"CPU": 2}))
    assert t.available == t.total == to_units({"CPU": 2})
    t.validate()


def test_a_pool_whose_workers_cannot_start_fails_its_waiting_requests():
    t = table(cpus=2)
    env = (("MANTA_RUNTIME_ENV_PIP", "{}"),)
    assert t.request(req(1, key=env)) == [lt.StartWorker(env)]
    t.request(req(2))
    t.worker_started(b"plain", ())
    failed, cmds = t.start_failed(env)
    assert failed == [1] and not grants(cmds)
    assert t.available["CPU"] == UNIT  # the failed request's CPU came back


def test_a_pool_that_cannot_start_gives_back_every_name_a_bundle_request_took():
    from manta._private.scheduling.bundles import bundle_resource, bundle_resources

    pg = bytes(range(18))
    t = table(cpus=1)
    assert t.reserve(to_units({"CPU": 1}))
    t.add_resources(to_units(bundle_resources({"CPU": 1}, pg, 0)))
    env = (("MANTA_RUNTIME_ENV_PIP", "{}"),)
    t.request(lt.Request(1, "o", to_units({bundle_resource("CPU", pg, 0): 1}), env))
    assert t.available[bundle_resource("CPU", pg, None)] == 0  # the group's name is taken too
    assert t.start_failed(env)[0] == [1]
    assert t.available[bundle_resource("CPU", pg, None)] == t.available[bundle_resource("CPU", pg, 0)] == UNIT
    t.validate()


def test_work_in_a_bundle_and_work_in_any_bundle_share_its_room():
    """A one-CPU bundle holds one one-CPU actor, whether it was placed by
    the bundle's index or by -1 (Ray's count; manta ran both)."""
    from manta._private.scheduling.bundles import bundle_resource, bundle_resources

    pg = bytes(range(18))
    t = table(cpus=2)
    assert t.reserve(to_units({"CPU": 1}))
    t.add_resources(to_units(bundle_resources({"CPU": 1}, pg, 0)))
    in0, anywhere = to_units({bundle_resource("CPU", pg, 0): 1}), to_units({bundle_resource("CPU", pg, None): 1})
    t.request(lt.Request(1, "o", in0, (), for_actor=True))
    t.worker_started(b"a", ())
    assert t.request(lt.Request(2, "p", anywhere, (), for_actor=True)) == []  # waits for the bundle
    t.validate()
    assert lt.StartWorker(()) in t.return_lease(1)
    assert grants(t.worker_started(b"b", ())) == [lt.Grant(2, 2, b"b")]
    assert t.leases[2].resources == {**in0, **anywhere}
    t.return_lease(2)
    assert t.available[bundle_resource("CPU", pg, 0)] == t.available[bundle_resource("CPU", pg, None)] == UNIT
    t.validate()


def test_a_grant_whose_worker_is_starting_does_not_outlive_its_removed_bundle():
    """The bundle goes while the worker for a grant in it is being started:
    when the worker comes, nothing runs in the removed bundle."""
    from manta._private.scheduling.bundles import bundle_resource, bundle_resources

    pg = bytes(range(18))
    t = table(cpus=2)
    assert t.reserve(to_units({"CPU": 1}))
    names = to_units(bundle_resources({"CPU": 1}, pg, 0))
    t.add_resources(names)
    assert t.request(lt.Request(1, "head", to_units({bundle_resource("CPU", pg, 0): 1}), (), for_actor=True)) == [
        lt.StartWorker(())]
    t.validate()
    assert not grants(t.remove_resources(names))
    t.unreserve(to_units({"CPU": 1}))
    assert grants(t.worker_started(b"a", ())) == [] and b"a" in t.idle[(lt.SPARE, ())]
    assert len(t.pending) == 1  # waits for a bundle that is gone, as in Ray
    assert t.available == t.total == to_units({"CPU": 2})
    t.validate()


# -- workers are never shared between jobs -----------------------------------


def job_req(i, job, key=(), owner=None):
    return lt.Request(i, owner or f"driver{job}", to_units({"CPU": 1}), key, job_id=job)


def test_a_worker_that_ran_one_jobs_task_is_never_leased_to_another_job():
    t = table(cpus=2)
    assert t.request(job_req(1, job=1)) == [lt.StartWorker((), 1)]
    assert grants(t.worker_started(b"w1", (), 1)) == [lt.Grant(1, 1, b"w1")]
    t.return_lease(1)
    # Job 2 waits for a worker of its own though job 1's is idle...
    assert t.request(job_req(2, job=2)) == [lt.StartWorker((), 2)]
    assert grants(t.worker_started(b"w2", (), 2)) == [lt.Grant(2, 2, b"w2")]
    # ...and job 1 gets its own back.
    assert grants(t.request(job_req(3, job=1))) == [lt.Grant(3, 3, b"w1")]
    t.validate()


def test_a_spare_worker_goes_to_the_first_job_that_asks_and_is_then_its_own():
    t = table(cpus=2)
    t.worker_started(b"spare", ())  # prestarted: nobody's yet
    assert grants(t.request(job_req(1, job=7))) == [lt.Grant(1, 1, b"spare")]
    assert t.workers[b"spare"].job_id == 7
    t.return_lease(1)
    assert t.request(job_req(2, job=8)) == [lt.StartWorker((), 8)]
    t.validate()


def test_a_runtime_env_gets_workers_of_its_own_within_a_job():
    t = table(cpus=2)
    t.request(job_req(1, job=1))
    t.worker_started(b"plain", (), 1)
    t.return_lease(1)
    env = (("A", "1"),)
    assert t.request(job_req(2, job=1, key=env)) == [lt.StartWorker(env, 1)]
    t.validate()


def test_a_worker_whose_request_went_away_ran_nothing_and_is_a_spare():
    t = table(cpus=2)
    t.request(job_req(1, job=1, owner="gone"))
    t.owner_gone("gone")
    t.worker_started(b"w", (), 1)
    assert grants(t.request(job_req(2, job=2))) == [lt.Grant(2, 2, b"w")]
    t.validate()


def test_a_jobs_end_stops_its_idle_workers_and_those_its_leases_give_back():
    t = lt.LeaseTable(to_units({"CPU": 2}), max_idle_workers=4, spares=1)
    t.request(job_req(1, job=1))
    t.request(job_req(2, job=1))
    t.worker_started(b"a", (), 1)
    t.worker_started(b"b", (), 1)
    t.request(job_req(3, job=2))  # another job's request waits for a CPU
    t.return_lease(1)  # a's CPU goes to job 2, through a worker of its own
    t.worker_started(b"c", (), 2)
    cmds = t.job_ended(1)
    assert lt.StopWorker(b"a") in cmds and lt.StartWorker(()) in cmds  # a spare replaces it
    assert lt.StopWorker(b"b") in t.return_lease(2)  # given back after the end: stopped
    assert set(t.workers) == {b"c"}
    t.worker_started(b"spare", ())
    assert t.job_ended(1) == []  # told twice: the spare is there already
    t.validate()


def test_a_request_waits_for_a_prestarted_spare_instead_of_forking_another():
    t = lt.LeaseTable(to_units({"CPU": 2}), max_idle_workers=4, spares=2, prestarted=2)
    assert t.request(job_req(1, job=1)) == []  # two spares are on their way: no StartWorker
    assert grants(t.worker_started(b"s1", ())) == [lt.Grant(1, 1, b"s1")]
    t.worker_started(b"s2", ())
    assert grants(t.request(job_req(2, job=1))) == [lt.Grant(2, 2, b"s2")]
    t.validate()


def test_requests_past_the_spares_on_their_way_start_workers_of_their_own():
    t = lt.LeaseTable(to_units({"CPU": 4}), max_idle_workers=4, spares=1, prestarted=1)
    assert t.request(job_req(1, job=1)) == []
    assert t.request(job_req(2, job=1)) == [lt.StartWorker((), 1)]
    assert grants(t.worker_started(b"own", (), 1)) == [lt.Grant(2, 2, b"own")]
    assert grants(t.worker_started(b"spare", ())) == [lt.Grant(1, 1, b"spare")]
    assert t.request(job_req(3, job=1)) == [lt.StartWorker((), 1)]  # no spare left to wait for
    t.validate()


def test_a_prestarted_spare_that_dies_before_registering_is_replaced_for_who_waits():
    # The hang this fixes: the spare died at start, the actor's request
    # waited for it forever (the node said nothing, CPU 0 of 1 in use).
    t = lt.LeaseTable(to_units({"CPU": 1}), max_idle_workers=4, spares=1, prestarted=1)
    assert t.request(job_req(1, job=1)) == []
    assert t.start_lost(lt.SPARE, ()) == [lt.StartWorker((), lt.SPARE)]
    assert grants(t.worker_started(b"again", ())) == [lt.Grant(1, 1, b"again")]
    t.validate()


def test_a_lost_spare_with_nobody_waiting_starts_nothing():
    t = lt.LeaseTable(to_units({"CPU": 2}), max_idle_workers=4, spares=1, prestarted=1)
    assert t.start_lost(lt.SPARE, ()) == []
    assert t.request(job_req(1, job=1)) == [lt.StartWorker((), 1)]  # none on its way now: forks
    t.validate()


def test_a_jobs_worker_lost_at_start_is_started_again():
    t = table(cpus=2)
    assert t.request(job_req(1, job=3)) == [lt.StartWorker((), 3)]
    assert t.start_lost(3, ()) == [lt.StartWorker((), 3)]
    assert grants(t.worker_started(b"w", (), 3)) == [lt.Grant(1, 1, b"w")]
    t.validate()


def test_workers_lost_at_start_again_and_again_fail_the_requests_and_free_their_cpus():
    t = table(cpus=1)
    t.request(job_req(1, job=3))
    for _ in range(lt.START_RETRIES):
        assert t.start_lost(3, ()) == [lt.StartWorker((), 3)]
    out = t.start_lost(3, ())
    assert [type(c) for c in out] == [lt.Refuse] and out[0].request_id == 1 and "registered" in out[0].why
    assert t.available == t.total and not t.starting
    # A later request starts afresh.
    assert t.request(job_req(2, job=3)) == [lt.StartWorker((), 3)]
    t.validate()


def test_a_registration_clears_the_count_of_losses():
    t = table(cpus=2)
    t.request(job_req(1, job=3))
    for _ in range(lt.START_RETRIES):
        t.start_lost(3, ())
    t.worker_started(b"w", (), 3)
    t.request(job_req(2, job=3))
    assert t.start_lost(3, ()) == [lt.StartWorker((), 3)]  # the count began again
    t.validate()
