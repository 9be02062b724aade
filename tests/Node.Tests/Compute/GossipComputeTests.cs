using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Potluck.Node.Compute;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport.Memory;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;

namespace Potluck.Node.Tests.Compute;

[CancelAfter(60_000)]
public class GossipComputeTests
{
    [Test]
    public async Task OverRealGossipsub_AdvertisementReachesRequester_AndTaskRunsAndIsPaid(CancellationToken ct)
    {
        var random = new Random(21);
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var network = new SimulatedNetwork(time);
        var root = Path.Combine(Path.GetTempPath(), "potluck-compute-tests", Guid.NewGuid().ToString("N"));
        var owned = new List<IAsyncDisposable>();
        try
        {
            async Task<(Libp2pHost Host, GossipsubService Gossip, ComputeNode Node)> StartAsync(string name, bool provide)
            {
                var runtime = NodeRuntime.WithTime(time, random.Next());
                var host = Libp2pHost.Create(PrivateKey.FromRandom(random), [network.CreateTransport()], new Libp2pHostSettings(), runtime, NullLoggerFactory.Instance);
                await host.StartAsync([Multiaddr.Parse("/memory/0")], ct);
                var gossip = new GossipsubService(host, new GossipsubOptions(), runtime, NullLoggerFactory.Instance);
                var node = ComputeNode.Start(host, new GossipTopicBus(gossip, NullLogger<GossipTopicBus>.Instance), new ComputeNodeOptions
                {
                    DataDir = Path.Combine(root, name),
                    Provide = provide,
                    Provider = ComputeCluster.ProviderOptions(price: 10),
                    Sandbox = new Potluck.Scheduler.Sandbox.SandboxOptions { MaxMemoryBytes = 128L << 20 },
                    Seed = random.Next(),
                }, NullLoggerFactory.Instance, time);
                owned.Add(host);
                owned.Add(gossip);
                owned.Add(node);
                return (host, gossip, node);
            }

            var requester = await StartAsync("requester", provide: false);
            var provider = await StartAsync("provider", provide: true);
            await requester.Host.ConnectAsync(provider.Host.ListenAddresses[0].WithPeer(provider.Host.PeerId), ct);
            await provider.Gossip.WaitUntilAsync(s => s.Peers(AdvertisementProtocol.Topic).Count == 1, ct);
            time.Advance(new AdvertisementOptions().PublishInterval);
            await requester.Node.Client.WaitForProvidersAsync(1, ct);

            var result = await requester.Node.SubmitAsync(new TaskSubmission
            {
                Module = ComputeCluster.Sample("hashchain"),
                Input = "gossip"u8.ToArray(),
                Args = ["250"],
                Fuel = 200_000_000,
                MemoryBytes = 32L << 20,
                MaxPricePerMegaFuel = 50,
            }, ct);

            Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
            Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("gossip"u8.ToArray(), 250)));
            Assert.That(result.Provider, Is.EqualTo(provider.Host.PeerId));
            Assert.That(result.Verified, Is.True);
            await requester.Node.Client.WhenReceiptsDeliveredAsync(ct);
            Assert.That(provider.Node.Ledger.Balance() - new CreditsOptions().InitialGrant, Is.EqualTo(result.Cost));
            Assert.That(requester.Node.Ledger.Reservations(PaymentState.Delivered), Has.Count.EqualTo(1));
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
