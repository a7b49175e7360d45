//! Replicas of `weir` on a real etcd: one leader decides, every replica
//! serves real Envoys, commands and metrics reach the leader through any
//! replica, and the failures of the leader, of a follower and of etcd each do
//! what `docs/ha.md` says.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_testbed::canary::{self, CANARY};
use weir_testbed::etcd::Etcd;
use weir_testbed::fleet::{Fleet, PolicyFile, policy_from_yaml};
use weir_testbed::steady::Traffic;
use weir_testbed::wait::eventually;
use weir_testbed::weir::{Weir, ads_bootstrap_replicas};
use weir_testbed::{Behaviour, Envoy, http_client};

/// The lease TTL the replicas run with (the default).
const TTL: Duration = Duration::from_secs(2);
/// The controller's interval (the default).
const INTERVAL: Duration = Duration::from_millis(250);

/// A canary that starts at 50 % and holds each step `hold`.
fn policy(steps: &str, hold: &str) -> weir_policy::Policy {
    policy_from_yaml("rollout.yaml", &canary::policy_yaml(steps, hold, 40, 2.0)).unwrap()
}

/// A free loopback port, for a replica an Envoy's bootstrap names before it runs.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Backends, one etcd, the policy file every replica reads, and the replicas.
struct World {
    fleet: Fleet,
    policy_file: PolicyFile,
    etcd: Etcd,
    replicas: Vec<Option<Weir>>,
}

impl World {
    async fn start(policy: weir_policy::Policy, replicas: usize) -> Self {
        let etcd = Etcd::start().await.unwrap();
        Self::with_etcd(policy, replicas, etcd).await
    }

    /// Starts `replicas` replicas, the first alone until it leads (so that
    /// it is the leader).
    async fn with_etcd(policy: weir_policy::Policy, replicas: usize, etcd: Etcd) -> Self {
        let fleet = Fleet::start(policy).unwrap();
        let policy_file = PolicyFile::new("policy.yaml", fleet.policy()).unwrap();
        let mut world = Self {
            fleet,
            policy_file,
            etcd,
            replicas: Vec::new(),
        };
        for i in 0..replicas {
            let weir = world.spawn(i, free_port()).await;
            world.replicas.push(Some(weir));
            if i == 0 {
                world.wait_leader(Duration::from_secs(10)).await;
            }
        }
        world
    }

    async fn spawn(&self, i: usize, xds: SocketAddr) -> Weir {
        self.spawn_reading(i, xds, self.policy_file.path()).await
    }

    /// Replica `r{i}` on `xds`, reading the policy at `policy`.
    async fn spawn_reading(&self, i: usize, xds: SocketAddr, policy: &std::path::Path) -> Weir {
        let id = format!("r{i}");
        let url = self.etcd.store_url();
        let env = [
            ("WEIR_STORE", url.as_str()),
            ("WEIR_REPLICA_ID", id.as_str()),
        ];
        Weir::start_at(policy, xds, &env).await.unwrap()
    }

    /// An Envoy whose bootstrap names replica `on` and then replica `next`,
    /// which starts only once the Envoy is up: its stream is on `on`.
    async fn envoy_on_then_start(&mut self, on: usize, next: usize, node: &str) -> Envoy {
        let port = free_port();
        let bootstrap =
            ads_bootstrap_replicas(&[self.replica(on).xds_addr(), port], node, false).unwrap();
        let envoy = Envoy::start(&bootstrap, 1).await.unwrap();
        let weir = self.spawn(next, port).await;
        self.replicas.push(Some(weir));
        assert_eq!(connected(self.replica(on)).await, [node]);
        envoy
    }

    fn replica(&self, i: usize) -> &Weir {
        self.replicas[i].as_ref().unwrap()
    }

    fn alive(&self) -> impl Iterator<Item = (usize, &Weir)> {
        self.replicas
            .iter()
            .enumerate()
            .filter_map(|(i, w)| Some((i, w.as_ref()?)))
    }

    /// The one replica that says it leads, once every live replica agrees.
    async fn wait_leader(&self, deadline: Duration) -> usize {
        eventually("one leader every replica names", deadline, || async {
            let mut leaders = Vec::new();
            let mut named = Vec::new();
            for (i, weir) in self.alive() {
                let status = weir.status().await.ok()?;
                let replication = &status["replication"];
                if replication["role"] == "leader" && replication["deciding"] == true {
                    leaders.push(i);
                }
                named.push(replication["leader"].as_str()?.to_owned());
            }
            let [leader] = leaders[..] else { return None };
            let id = format!("r{leader}");
            named.iter().all(|n| *n == id).then_some(leader)
        })
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", self.logs()))
    }

    fn logs(&self) -> String {
        self.alive()
            .map(|(i, w)| format!("--- replica r{i}:\n{}", w.log()))
            .collect()
    }

    /// An Envoy (node `node`, `workers` workers) whose bootstrap names the replicas `which`.
    async fn envoy_on(&self, which: &[usize], node: &str, workers: u32) -> Envoy {
        let xds: Vec<SocketAddr> = which.iter().map(|&i| self.replica(i).xds_addr()).collect();
        let bootstrap = ads_bootstrap_replicas(&xds, node, false).unwrap();
        Envoy::start(&bootstrap, workers).await.unwrap()
    }
}

/// The canary answers a fifth of its requests with 503.
fn break_the_canary(fleet: &Fleet) {
    fleet.backend(CANARY).set_behaviour(Behaviour {
        fail_basis_points: 2_000,
        fail_status: 503,
        ..Behaviour::default()
    });
}

async fn rollout(weir: &Weir) -> Value {
    weir.rollout(CANARY).await.unwrap()
}

/// Node ids with a stream open to `weir`.
async fn connected(weir: &Weir) -> Vec<String> {
    let nodes: Value = weir.get_json("/v1/nodes").await.unwrap();
    nodes["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["streams"].as_u64() > Some(0))
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_serve_the_leaders_decisions_and_forward_commands_to_it() {
    let w = World::start(policy("[50, 100]", "10m"), 2).await;
    let (leader, follower) = (w.replica(0), w.replica(1));
    // An Envoy that knows only the follower.
    let envoy = w.envoy_on(&[1], "follower-envoy", 1).await;
    assert_eq!(
        follower.snapshot_version().await.unwrap(),
        leader.snapshot_version().await.unwrap(),
        "the same policy and state make the same snapshot on every replica"
    );

    // A command sent to the follower is decided by the leader, and its
    // answer says so.
    let answer = http_client()
        .post(format!(
            "http://{}/v1/rollouts/{CANARY}/abort",
            follower.admin_addr()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["weir-leader"], "r0");
    let decision: Value = answer.json().await.unwrap();
    assert_eq!(decision["decision"]["to"], "rolled_back", "{decision}");
    let leader_policy = leader.status().await.unwrap()["replication"]["policy"].clone();
    assert_eq!(
        decision["decision"]["policy"], leader_policy,
        "the decision names the policy it was made under"
    );
    assert_eq!(rollout(leader).await["phase"], "rolled_back");
    // The follower serves it: its Envoy runs the stable cluster only.
    canary::wait_envoy_weight(&envoy, 0, Duration::from_secs(5))
        .await
        .unwrap();
    eventually(
        "the follower to show the decision",
        Duration::from_secs(5),
        || async { (rollout(follower).await["phase"] == "rolled_back").then_some(()) },
    )
    .await
    .unwrap();

    // Pins too: pinned through the follower, kept by the leader, served by both.
    let feed: weir_policy::Feed =
        serde_json::from_value(serde_json::json!({"concurrency_limit": 77})).unwrap();
    follower.put_feed(&feed).await.unwrap().unwrap();
    eventually(
        "Envoy to run the pinned limit",
        Duration::from_secs(5),
        || async {
            (canary::envoy_concurrency_limit(&envoy).await.ok().flatten() == Some(77)).then_some(())
        },
    )
    .await
    .unwrap();
    let pinned: Value = leader.get_json("/v1/feed").await.unwrap();
    assert_eq!(pinned["concurrency_limit"], 77);

    // `weir status` on either replica lists both, with the leader.
    let status = follower.status().await.unwrap();
    let replicas: Vec<&str> = status["replication"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(replicas, ["r0", "r1"], "{status}");
    for replica in status["replication"]["replicas"].as_array().unwrap() {
        assert_eq!(replica["policy"], leader_policy, "{replica}");
    }
    assert_eq!(status["replication"]["role"], "follower");
    assert_eq!(status["replication"]["leader"], "r0");

    // `weir status` against the follower prints them.
    let printed = std::process::Command::new(weir_testbed::paths::weir_binary())
        .args(["status", "--server"])
        .arg(format!("http://{}", follower.admin_addr()))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.contains("REPLICAS (asked r1, a follower; leader r0; lease TTL 2 s)"),
        "{printed}"
    );
    let leader_row = printed
        .lines()
        .find(|l| l.starts_with("r0 "))
        .unwrap_or_default();
    assert!(leader_row.contains("leader"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_reported_bad_only_to_a_follower_is_rolled_back_by_the_leader() {
    let w = World::start(policy("[50, 100]", "30s"), 2).await;
    // The Envoy — its configuration and its metrics — talks only to the follower.
    let envoy = w.envoy_on(&[1], "follower-envoy", 2).await;
    break_the_canary(&w.fleet);
    let traffic = Traffic::start(&envoy, 100, Duration::from_secs(30));
    let first_error = traffic
        .wait_first_canary_error(Duration::from_secs(10))
        .await
        .unwrap();
    canary::wait_envoy_weight(&envoy, 0, Duration::from_secs(10))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", w.logs()));
    let reaction = first_error.elapsed();
    traffic.stop().await;
    assert!(
        reaction <= Duration::from_millis(2_500),
        "rolled back {reaction:?} after the first bad response"
    );
    let decided = rollout(w.replica(0)).await;
    assert_eq!(decided["phase"], "rolled_back");
    // The follower shows the leader's verdict, not a blank.
    eventually(
        "the follower to show the verdict",
        Duration::from_secs(5),
        || async {
            let rollouts = w.replica(1).get_json("/v1/rollouts").await.ok()?;
            (rollouts["rollouts"][0]["verdict"] == "bad").then_some(())
        },
    )
    .await
    .unwrap();
    let forwarding = &w.replica(1).status().await.unwrap()["otlp"]["forwarding"];
    assert!(
        forwarding["batches_forwarded"].as_u64() > Some(0),
        "{forwarding}"
    );
    assert!(
        w.replica(0).status().await.unwrap()["otlp"]["requests"]["replicas"].as_u64() > Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_the_lease_and_the_rollout_goes_on() {
    // Steps enough that the rollout is still walking when the canary breaks.
    let mut w = World::start(policy("[50, 75, 85, 95, 100]", "3s"), 1).await;
    let envoy = w.envoy_on_then_start(0, 1, "fleet-envoy").await;

    let traffic = Traffic::start(&envoy, 100, Duration::from_secs(60));
    let sending = Instant::now();
    eventually("the second step", Duration::from_secs(30), || async {
        (rollout(w.replica(0)).await["weight_bp"] == 7_500).then_some(())
    })
    .await
    .unwrap();
    let before = rollout(w.replica(0)).await;

    let killed = Instant::now();
    drop(w.replicas[0].take());
    let leader = w.wait_leader(TTL * 3).await;
    let took_over = killed.elapsed();
    assert_eq!(leader, 1);
    assert!(
        took_over <= TTL + INTERVAL + Duration::from_secs(1),
        "the follower led {took_over:?} after the leader died"
    );
    let after = rollout(w.replica(1)).await;
    assert_eq!(
        (&after["step"], &after["weight_bp"]),
        (&before["step"], &before["weight_bp"]),
        "the new leader resumes at the same step and weight"
    );
    // A canary that goes bad after the failover is still rolled back.
    break_the_canary(&w.fleet);
    // Envoy retries its ADS stream with a backoff of up to 4 s (the
    // bootstrap's), and a loaded machine adds to it: twice that, and more.
    eventually(
        "the Envoy on the new leader",
        Duration::from_secs(20),
        || async { (connected(w.replica(1)).await == ["fleet-envoy"]).then_some(()) },
    )
    .await
    .unwrap();
    canary::wait_envoy_weight(&envoy, 0, Duration::from_secs(15))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", w.logs()));
    assert_eq!(rollout(w.replica(1)).await["phase"], "rolled_back");
    let failed = traffic.failed();
    let expected = 100 * sending.elapsed().as_secs();
    let sent = traffic.stop().await;
    assert!(sent >= expected / 2, "{sent} requests of about {expected}");
    assert_eq!(failed, 0, "device requests failed while the leader changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_follower_changes_nothing_but_where_its_envoys_connect() {
    let mut w = World::start(policy("[50, 100]", "10m"), 2).await;
    let envoy = w.envoy_on_then_start(1, 2, "fleet-envoy").await;
    let version = w.replica(0).snapshot_version().await.unwrap();
    let traffic = Traffic::start(&envoy, 50, Duration::from_secs(30));

    drop(w.replicas[1].take());
    eventually(
        "the Envoy on the third replica",
        Duration::from_secs(10),
        || async { (connected(w.replica(2)).await == ["fleet-envoy"]).then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(
        w.wait_leader(Duration::from_secs(1)).await,
        0,
        "the leader stays"
    );
    for (_, weir) in w.alive() {
        assert_eq!(weir.snapshot_version().await.unwrap(), version);
    }
    let failed = traffic.failed();
    let sent = traffic.stop().await;
    assert!(sent > 0);
    assert_eq!(failed, 0, "device requests failed while a follower died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_deciding_and_one_leads_again_when_it_returns() {
    let mut w = World::start(policy("[50, 75, 100]", "10m"), 2).await;
    let envoy = w.envoy_on(&[0, 1], "fleet-envoy", 1).await;
    canary::wait_envoy_weight(&envoy, 5_000, Duration::from_secs(10))
        .await
        .unwrap();
    let version = w.replica(0).snapshot_version().await.unwrap();

    w.etcd.kill(0);
    let stopped = Instant::now();
    eventually("no replica to decide", TTL * 3, || async {
        for (_, weir) in w.alive() {
            let status = weir.status().await.ok()?;
            if status["replication"]["deciding"] != false {
                return None;
            }
        }
        Some(())
    })
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", w.logs()));
    assert!(stopped.elapsed() <= TTL + Duration::from_secs(1));
    // Everything keeps serving the last feed.
    for (_, weir) in w.alive() {
        assert_eq!(weir.snapshot_version().await.unwrap(), version);
    }
    assert_eq!(canary::envoy_weight(&envoy).await.unwrap(), Some(5_000));
    let (status, _) = envoy
        .send("GET", "/", &[("x-device-id", "d-1")])
        .await
        .unwrap();
    assert_eq!(status, 200, "Envoy serves devices while etcd is down");

    w.etcd.restart(0).await.unwrap();
    let leader = w.wait_leader(Duration::from_secs(15)).await;
    let resumed = rollout(w.replica(leader)).await;
    assert_eq!(resumed["weight_bp"], 5_000, "nothing was lost: {resumed}");
    for (_, weir) in w.alive() {
        assert_eq!(weir.snapshot_version().await.unwrap(), version);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_reading_different_policies_each_serve_a_whole_one() {
    let mut w = World::start(policy("[50, 100]", "10m"), 1).await;
    // A policy file updated on one replica first: the canary is gone there.
    let mut edited = w.fleet.policy().clone();
    edited.services[0].placements[0].canary = None;
    let edited = PolicyFile::new("policy.yaml", &edited).unwrap();
    let weir = w.spawn_reading(1, free_port(), edited.path()).await;
    w.replicas.push(Some(weir));
    let on_leader = w.envoy_on(&[0], "envoy-0", 1).await;
    let on_follower = w.envoy_on(&[1], "envoy-1", 1).await;
    canary::wait_envoy_weight(&on_leader, 5_000, Duration::from_secs(10))
        .await
        .unwrap();

    // The leader's decision reaches the follower, which serves it under its
    // own policy: a whole snapshot that its Envoy accepts.
    let answer = http_client()
        .post(format!(
            "http://{}/v1/rollouts/{CANARY}/abort",
            w.replica(0).admin_addr()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    canary::wait_envoy_weight(&on_leader, 0, Duration::from_secs(5))
        .await
        .unwrap();
    let follower = w.replica(1);
    follower
        .wait_acked(
            "envoy-1",
            "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        )
        .await
        .unwrap();
    assert_ne!(
        follower.snapshot_version().await.unwrap(),
        w.replica(0).snapshot_version().await.unwrap(),
        "the follower serves its own policy's snapshot"
    );
    let nodes: Value = follower.get_json("/v1/nodes").await.unwrap();
    let node = &nodes["nodes"][0];
    assert!(
        node["last_nack"].is_null(),
        "the follower's Envoy rejected: {node}"
    );
    let (envoy, _) = on_follower
        .send("GET", "/", &[("x-device-id", "d-1")])
        .await
        .unwrap();
    assert_eq!(envoy, 200);

    // `weir status` shows which replica serves which policy.
    let status = follower.status().await.unwrap();
    let served: Vec<(String, String)> = status["replication"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["policy"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let leader_policy = w.replica(0).status().await.unwrap()["replication"]["policy"].clone();
    assert_eq!(served.len(), 2, "{status}");
    assert_eq!(served[0].1, leader_policy.as_str().unwrap());
    assert_eq!(
        served[1].1,
        status["replication"]["policy"].as_str().unwrap()
    );
    assert_ne!(served[0].1, served[1].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_etcd_losing_one_member_keeps_one_leader_deciding() {
    let etcd = Etcd::cluster(3).await.unwrap();
    let mut w = World::with_etcd(policy("[50, 75, 100]", "10m"), 2, etcd).await;
    let envoy = w.envoy_on(&[0, 1], "fleet-envoy", 1).await;
    canary::wait_envoy_weight(&envoy, 5_000, Duration::from_secs(10))
        .await
        .unwrap();

    // The member both replicas list first goes away: their clients fail
    // over to the others, and the cluster keeps its quorum.
    w.etcd.kill(0);
    // Replicas whose streams ran through that member start a new term, and
    // etcd may elect a new raft leader: a command answered 503 meanwhile
    // ("try again") changes nothing, and is taken once things settle.
    eventually("the promotion to be taken", TTL * 5, || async {
        let answer = http_client()
            .post(format!(
                "http://{}/v1/rollouts/{CANARY}/promote",
                w.replica(1).admin_addr()
            ))
            .send()
            .await
            .unwrap();
        let status = answer.status();
        if status == 200 {
            return Some(());
        }
        let body = answer.text().await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(
            canary::envoy_weight(&envoy).await.unwrap(),
            Some(5_000),
            "{body}"
        );
        None
    })
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", w.logs()));
    w.wait_leader(TTL * 4).await;
    canary::wait_envoy_weight(&envoy, 10_000, Duration::from_secs(10))
        .await
        .unwrap();
    eventually(
        "both replicas to show the promotion",
        Duration::from_secs(5),
        || async {
            for (_, weir) in w.alive() {
                if rollout(weir).await["phase"] != "promoted" {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_bound_to_every_address_must_say_where_it_is_reached() {
    let etcd = Etcd::start().await.unwrap();
    let fleet = Fleet::start(policy("[50, 100]", "10m")).unwrap();
    let policy_file = PolicyFile::new("policy.yaml", fleet.policy()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(weir_testbed::paths::weir_binary())
        .arg("serve")
        .arg("--policy")
        .arg(policy_file.path())
        .args([
            "--xds-address",
            "127.0.0.1:0",
            "--admin-address",
            "0.0.0.0:0",
        ])
        .args(["--admin-token", "t", "--listener-address", "127.0.0.1:0"])
        .arg("--wasm")
        .arg(weir_testbed::paths::filter_wasm())
        .arg("--state")
        .arg(dir.path().join("state.redb"))
        .env("WEIR_STORE", etcd.store_url())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("--advertise-admin"), "{stderr}");
}
