using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Transport.Memory;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Credits;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>Fork proofs over real gossipsub: checked before forwarding; a forged one stops at the first honest node and costs its sender.</summary>
[Category("Adversarial")]
[CancelAfter(60_000)]
public class ForkGossipTests
{
    private static SignedBlock Block(PrivateKey author, PrivateKey counterparty, int lease) => SignedBlock.Sign(new ChainBlock
    {
        Author = author.PeerId.ToBytes(),
        Seq = 1,
        Previous = SignedBlock.Genesis,
        Counterparty = counterparty.PeerId.ToBytes(),
        ReceiptId = Receipt.ComputeId(BitConverter.GetBytes(lease), counterparty.PeerId, author.PeerId),
        LeaseId = BitConverter.GetBytes(lease),
        Amount = 10,
        FuelUsed = 1_000_000,
    }, author);

    private static byte[] RealFork(PrivateKey forker, PrivateKey counterparty)
    {
        ForkProof.From(Block(forker, counterparty, 1), Block(forker, counterparty, 2), out var proof);
        return proof!.Encoded;
    }

    [Test]
    public async Task ForgedForkProof_StopsAtTheFirstHonestNode_WhichLowersTheSendersScore(CancellationToken ct)
    {
        var random = new Random(31);
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var network = new SimulatedNetwork(time);
        var root = Path.Combine(Path.GetTempPath(), "potluck-forkgossip-tests", Guid.NewGuid().ToString("N"));
        var owned = new List<PotluckNode>();
        try
        {
            async Task<PotluckNode> StartAsync(string name)
            {
                var node = await PotluckNode.CreateBuilder()
                    .UseSimulatedNetwork(network)
                    .UseTime(time)
                    .UseSeed(random.Next())
                    .UseKey(PrivateKey.FromRandom(random))
                    .Configure(o => o with
                    {
                        Listen = [Multiaddr.Parse("/memory/0")],
                        DataDir = Path.Combine(root, name),
                        Compute = o.Compute with { Enabled = true, Provide = false, Sandbox = new Potluck.Scheduler.Sandbox.SandboxOptions { MaxMemoryBytes = 64L << 20 } },
                    })
                    .StartAsync(ct);
                owned.Add(node);
                return node;
            }

            // attacker — relay — far: the far node hears the attacker only through the relay.
            var attacker = await StartAsync("attacker");
            var relay = await StartAsync("relay");
            var far = await StartAsync("far");
            await attacker.Host.ConnectAsync(relay.FullAddresses[0], ct);
            await far.Host.ConnectAsync(relay.FullAddresses[0], ct);
            await relay.Gossip.WaitUntilAsync(s => s.Peers(ChainProtocol.ForksTopic).Count == 2, ct);
            // The attacker publishes to the subscribers it knows (flood publish): until the relay's subscription has
            // reached it, a publish goes nowhere and the test would wait for a proof never sent.
            await attacker.Gossip.WaitUntilAsync(s => s.Peers(ChainProtocol.ForksTopic).Count == 1, ct);
            time.Advance(TimeSpan.FromSeconds(2));
            await relay.Gossip.WaitUntilAsync(s => s.MeshPeers(ChainProtocol.ForksTopic).Count == 2, ct);

            var heard = new List<PeerId>();
            var nextFork = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            far.Compute!.Chain!.ForkFound += proof =>
            {
                lock (heard)
                {
                    heard.Add(proof.Author);
                }
                nextFork.TrySetResult();
            };
            var x = PrivateKey.FromRandom(random);
            var y = PrivateKey.FromRandom(random);
            var other = PrivateKey.FromRandom(random);

            // A real fork proof crosses the relay...
            await attacker.Gossip.PublishAsync(ChainProtocol.ForksTopic, RealFork(x, other), ct);
            await nextFork.Task.WaitAsync(ct);
            nextFork = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            // ...a forged one does not; a real one sent after it arrives, so the forged one was dropped, not delayed.
            var forged = ChainForker.ForgedForkProofs(Block(y, other, 3), Block(other, y, 4))[1];
            await attacker.Gossip.PublishAsync(ChainProtocol.ForksTopic, forged, ct);
            await attacker.Gossip.PublishAsync(ChainProtocol.ForksTopic, RealFork(y, other), ct);
            await nextFork.Task.WaitAsync(ct);

            Assert.That(heard, Is.EqualTo(new[] { x.PeerId, y.PeerId }), "the far node heard the real proofs only");
            Assert.That(relay.Host.Budgets.ScoreOf(attacker.PeerId), Is.EqualTo(-relay.Host.Budgets.Options.RefusedProofPenalty).Within(0.01),
                "the relay lowered the sender's score for the forged proof");
            Assert.That(relay.Compute!.Reputation.IsRefused(attacker.PeerId), Is.True, "and refuses its author");
            Assert.That(far.Compute.Reputation.IsRefused(attacker.PeerId), Is.False, "the far node never saw it");
            Assert.That(far.Compute.Chain.IsForker(y.PeerId) && relay.Compute.Chain!.IsForker(x.PeerId), Is.True);
        }
        finally
        {
            for (var i = owned.Count - 1; i >= 0; i--)
            {
                await owned[i].DisposeAsync();
            }
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
