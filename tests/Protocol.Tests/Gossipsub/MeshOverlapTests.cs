using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using static Potluck.Protocol.Tests.Gossipsub.RouterFixture;
using GPb = Potluck.Protocol.Gossipsub.Pb;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// <see cref="GossipsubOptions.PreferMeshOverlap"/>: grafts prefer peers already in another of the node's meshes, at most
/// D−1 of D (<see cref="GossipsubOptions.MeshOverlapFreshPeers"/> = 1), and choose exactly as before with one topic.
/// Node-like options: D 5, D_hi 7, D_lo 4, D_out 2 (the node's D_hi is 6 now; the overlap rule does not read D_hi).
/// </summary>
public class MeshOverlapTests
{
    private const string A = "a";
    private const string B = "b";
    private const string C = "c";
    private const int D = 5;

    private static GossipsubOptions NodeLike(GossipsubOptions o, bool prefer) => o with { D = D, DHigh = 7, PreferMeshOverlap = prefer };

    private static RouterFixture Fixture(int seed, bool prefer, int peers, string[] topics, bool outbound = false)
    {
        var f = new RouterFixture(0, o => NodeLike(o, prefer), seed: seed);
        for (var i = 0; i < peers; i++)
        {
            f.AddPeer(outbound, topics);
        }
        f.Drain();
        return f;
    }

    [Test]
    public void Subscribe_SecondTopic_TakesDMinusOneFromTheFirstMeshAndOneFresh()
    {
        for (var seed = 1; seed <= 20; seed++)
        {
            var f = Fixture(seed, prefer: true, peers: 30, topics: [A, B]);
            f.Router.Subscribe(A, f.Now);
            f.Router.Subscribe(B, f.Now);
            var meshA = f.Router.MeshPeers(A).ToHashSet();
            var meshB = f.Router.MeshPeers(B).ToHashSet();

            Assert.That(meshA, Has.Count.EqualTo(D), $"seed {seed}");
            Assert.That(meshB, Has.Count.EqualTo(D), $"seed {seed}");
            Assert.That(meshB.Count(meshA.Contains), Is.EqualTo(D - 1), $"seed {seed}: D-1 by preference, one fresh");
            Assert.That(f.Router.CountMeshes(), Is.EqualTo(new MeshCensus(2, 2 * D, D + 1, 2)), $"seed {seed}");
            Assert.That(f.Router.Counters.OverlapGrafts, Is.EqualTo(D - 1));
        }
    }

    [Test]
    public void Subscribe_SecondTopic_WithoutThePreference_OverlapsOnlyByChance()
    {
        var shared = 0;
        for (var seed = 1; seed <= 20; seed++)
        {
            var f = Fixture(seed, prefer: false, peers: 30, topics: [A, B]);
            f.Router.Subscribe(A, f.Now);
            f.Router.Subscribe(B, f.Now);
            var meshA = f.Router.MeshPeers(A).ToHashSet();
            shared += f.Router.MeshPeers(B).Count(meshA.Contains);
            Assert.That(f.Router.Counters.OverlapGrafts, Is.Zero);
        }
        // Expected 5·5/30 ≈ 0.83 shared per seed at random; the preference gives 4.
        Assert.That(shared / 20.0, Is.LessThan(2));
    }

    [Test]
    public void FiveTopics_HoldFewerDistinctPeersThanWithoutThePreference()
    {
        string[] topics = ["t1", "t2", "t3", "t4", "t5"];
        int Distinct(bool prefer, int seed)
        {
            var f = Fixture(seed, prefer, peers: 60, topics: topics);
            foreach (var t in topics)
            {
                f.Router.Subscribe(t, f.Now);
            }
            f.Heartbeat(3);
            return f.Router.CountMeshes().Distinct;
        }
        for (var seed = 1; seed <= 10; seed++)
        {
            var with = Distinct(true, seed);
            var without = Distinct(false, seed);
            // With: the first mesh's 5, then one fresh per later topic (4 preferred of the earlier meshes' peers) = 9.
            Assert.That(with, Is.EqualTo(D + 4), $"seed {seed}");
            Assert.That(without, Is.GreaterThan(with), $"seed {seed}");
        }
    }

    [Test]
    public void Heartbeat_BelowDLow_RefillsFromAnotherMeshFirst_KeepingOneFresh()
    {
        var f = Fixture(3, prefer: true, peers: 30, topics: [A, B]);
        f.Router.Subscribe(A, f.Now);
        f.Router.Subscribe(B, f.Now);
        f.Drain();
        var meshA = f.Router.MeshPeers(A).ToHashSet();
        // Two peers leave B's mesh by PRUNE (backed off there); B falls to 3 < D_lo.
        var leaving = f.Router.MeshPeers(B).Take(2).ToArray();
        foreach (var p in leaving)
        {
            f.Router.HandleRpc(p, new GPb.RPC { Control = Prune(B) }, f.Now);
        }
        var before = f.Router.MeshPeers(B).ToHashSet();
        Assert.That(before, Has.Count.EqualTo(3));
        var overlapBefore = f.Router.Counters.OverlapGrafts;

        f.Heartbeat();

        var added = f.Router.MeshPeers(B).Where(p => !before.Contains(p)).ToArray();
        Assert.That(added, Has.Length.EqualTo(2));
        Assert.That(added, Has.None.AnyOf(leaving.Cast<object>().ToArray()));
        var eligibleInA = meshA.Where(p => !before.Contains(p) && !leaving.Contains(p)).ToArray();
        Assert.That(eligibleInA, Is.Not.Empty, "the scenario leaves a peer of A's mesh to prefer");
        // k = 2: ⌈2/5⌉ = 1 fresh, so at most one by preference, and one there is.
        Assert.That(added.Count(meshA.Contains), Is.EqualTo(1));
        Assert.That(f.Router.Counters.OverlapGrafts - overlapBefore, Is.EqualTo(1));
    }

    [Test, Category("Adversarial")]
    public void Adversaries_HoldingOneMesh_GetAtMostDMinusOneOfEachOtherMeshTheNodeGrafts()
    {
        // Five Sybils are the only subscribers of A (so they are all of A's mesh) and are in B and C too, beside 20 honest
        // peers. The preference would graft them first; the fresh share keeps an honest peer in each later mesh.
        for (var seed = 1; seed <= 30; seed++)
        {
            var f = new RouterFixture(0, o => NodeLike(o, true), seed: seed);
            var sybils = Enumerable.Range(0, D).Select(_ => f.AddPeer(false, [A, B, C]).PeerId).ToHashSet();
            for (var i = 0; i < 20; i++)
            {
                f.AddPeer(false, [B, C]);
            }
            f.Drain();
            f.Router.Subscribe(A, f.Now);
            f.Router.Subscribe(B, f.Now);
            f.Router.Subscribe(C, f.Now);
            f.Heartbeat(3);

            Assert.That(f.Router.MeshPeers(A).ToHashSet().SetEquals(sybils), Is.True, $"seed {seed}");
            var meshB = f.Router.MeshPeers(B);
            Assert.That(meshB, Has.Count.EqualTo(D), $"seed {seed}");
            Assert.That(meshB.Count(sybils.Contains), Is.EqualTo(D - 1), $"seed {seed}: D-1 by preference, no more");
            // C's preferred pool is A's and B's meshes (the Sybils and B's fresh honest peer); its fresh peer is in neither.
            var meshC = f.Router.MeshPeers(C);
            Assert.That(meshC, Has.Count.EqualTo(D), $"seed {seed}");
            Assert.That(meshC.Count(sybils.Contains), Is.LessThanOrEqualTo(D - 1), $"seed {seed}");
            Assert.That(meshC.Count(p => !sybils.Contains(p) && !meshB.Contains(p)), Is.GreaterThanOrEqualTo(1), $"seed {seed}: a fresh honest peer");
        }
    }

    [Test, Category("Adversarial")]
    public void Preference_NeverGraftsAPeerWithANegativeScore()
    {
        var f = Fixture(5, prefer: true, peers: 30, topics: [A, B]);
        f.Router.Subscribe(A, f.Now);
        f.Drain();
        var meshA = f.Router.MeshPeers(A).ToArray();
        // Every peer of A's mesh sends garbage: a behaviour penalty each, score below 0.
        foreach (var p in meshA)
        {
            f.Router.MalformedRpc(p);
            Assert.That(f.Router.Score(p, f.Now), Is.LessThan(0));
        }

        f.Router.Subscribe(B, f.Now);

        Assert.That(f.Router.MeshPeers(B), Has.Count.EqualTo(D));
        Assert.That(f.Router.MeshPeers(B), Has.None.AnyOf(meshA.Cast<object>().ToArray()));
        Assert.That(f.Router.Counters.OverlapGrafts, Is.Zero);
    }

    [Test]
    public void OutboundQuota_KeptWithThePreference()
    {
        for (var seed = 1; seed <= 10; seed++)
        {
            // A's peers are all inbound; B also has outbound peers, which A's mesh cannot supply: D_out comes from them.
            var f = new RouterFixture(0, o => NodeLike(o, true), seed: seed);
            for (var i = 0; i < 20; i++)
            {
                f.AddPeer(false, [A, B]);
            }
            var outbound = new HashSet<PeerId>();
            for (var i = 0; i < 6; i++)
            {
                outbound.Add(f.AddPeer(true, [B]).PeerId);
            }
            f.Drain();
            f.Router.Subscribe(A, f.Now);
            f.Router.Subscribe(B, f.Now);
            f.Heartbeat(2);

            var mesh = f.Router.MeshPeers(B);
            Assert.That(mesh.Count, Is.InRange(D, 7), $"seed {seed}");
            Assert.That(mesh.Count(outbound.Contains), Is.GreaterThanOrEqualTo(f.Options.DOut), $"seed {seed}");
        }
    }

    [Test]
    public void OneTopic_ChoosesExactlyAsWithoutThePreference()
    {
        for (var seed = 1; seed <= 10; seed++)
        {
            var on = Fixture(seed, prefer: true, peers: 25, topics: [A]);
            var off = Fixture(seed, prefer: false, peers: 25, topics: [A]);
            foreach (var f in new[] { on, off })
            {
                f.Router.Subscribe(A, f.Now);
            }
            for (var round = 0; round < 6; round++)
            {
                Assert.That(on.Router.MeshPeers(A).ToHashSet().SetEquals(off.Router.MeshPeers(A)), Is.True, $"seed {seed}, round {round}");
                // The same two mesh peers leave both (same keys: same seed), then a heartbeat refills.
                foreach (var f in new[] { on, off })
                {
                    foreach (var p in f.Router.MeshPeers(A).OrderBy(p => p.ToString(), StringComparer.Ordinal).Take(2).ToArray())
                    {
                        f.Router.RemovePeer(p, f.Now);
                    }
                    f.Heartbeat();
                }
            }
            Assert.That(on.Router.Counters.OverlapGrafts, Is.Zero);
        }
    }

    [Test]
    public void Options_FreshPeersOutsideOneToD_AreRefused()
    {
        var key = PrivateKey.FromRandom(new Random(1));
        foreach (var fresh in new[] { 0, D + 1 })
        {
            var options = NodeLike(new GossipsubOptions(), true) with { MeshOverlapFreshPeers = fresh };
            Assert.Throws<ArgumentOutOfRangeException>(() => _ = new GossipsubRouter(key.PeerId, key, options, new Random(1), DateTimeOffset.UnixEpoch));
        }
    }
}
