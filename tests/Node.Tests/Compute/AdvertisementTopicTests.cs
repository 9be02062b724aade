using Potluck.Node.Hosting;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport.Memory;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Topics;

namespace Potluck.Node.Tests.Compute;

/// <summary>
/// How a requester takes an advertisement off the topic: the validator opens the envelope (decoding, the provider's
/// Ed25519 signature, the fields' limits) and the handler stores what the validator opened, without opening the envelope
/// a second time. Every node hears every provider's advertisement, so a second opening was a signature verification per
/// provider per publication on every node: in a 500-node simulation, a fifth of all Ed25519 verifications (README,
/// "CPU per node against the mesh's size").
/// </summary>
public class AdvertisementTopicTests
{
    /// <summary>Captures the advertisement topic's validator and handler, so a test can drive them one after the other.</summary>
    private sealed class CapturingBus : ITopicBus
    {
        public Func<TopicMessage, (TopicVerdict Verdict, object? Opened)>? Validate { get; private set; }

        public Func<TopicMessage, object, ValueTask>? Handle { get; private set; }

        public ValueTask PublishAsync(string topic, ReadOnlyMemory<byte> data, CancellationToken ct) => ValueTask.CompletedTask;

        public ValueTask PublishAsync(string topic, ReadOnlyMemory<byte> data, string? audience, CancellationToken ct) => ValueTask.CompletedTask;

        public IDisposable Subscribe<TValidated>(string topic, TopicValidator<TValidated> validator, Func<TopicMessage, TValidated, CancellationToken, ValueTask> handler)
            where TValidated : class
        {
            if (topic == AdvertisementProtocol.Topic)
            {
                Validate = m => (validator(m, out var opened), opened);
                Handle = (m, opened) => handler(m, (TValidated)opened, CancellationToken.None);
            }
            return new Nothing();
        }

        private sealed class Nothing : IDisposable
        {
            public void Dispose()
            {
            }
        }
    }

    private static byte[] Ad(PrivateKey key, DateTimeOffset now) => AdvertisementCodec.Sign(new Advertisement
    {
        PeerId = key.PeerId.ToBytes(),
        ListenAddresses = [Multiaddr.Parse("/memory/4242").ToBytes()],
        Sequence = 1,
        IssuedAtUnixMs = now.ToUnixTimeMilliseconds(),
        ExpiresAtUnixMs = (now + TimeSpan.FromMinutes(2)).ToUnixTimeMilliseconds(),
        Cores = 2,
        AvailableCores = 2,
        MemoryBytes = 1L << 30,
        SpeedFuelPerSecond = 1_000_000_000,
        PricePerMegaFuel = 10,
        Policy = ProviderPolicyFlags.AcceptsUnknownModules | ProviderPolicyFlags.Deterministic,
    }, key);

    [Test]
    public void TheHandler_StoresWhatTheValidatorOpened_WithoutOpeningTheEnvelopeAgain() => VirtualTimeDriver.Run(async d =>
    {
        var random = new Random(7);
        var key = PrivateKey.FromRandom(random);
        var provider = PrivateKey.FromRandom(random);
        var bus = new CapturingBus();
        var dir = Path.Combine(Path.GetTempPath(), "potluck-adtopic-tests", Guid.NewGuid().ToString("N"));
        var network = new SimulatedNetwork(d.Clock, pipes: d.Loop.PipeScheduler);
        var node = await PotluckNode.CreateBuilder()
            .UseSimulatedNetwork(network)
            .UseRuntime(d.CreateRuntime(1))
            .UseKey(key)
            .UseTopicBus(_ => bus)
            .UseLoggerFactory(Potluck.Tests.TestLogging.Factory)
            .Configure(o => o with
            {
                Listen = [Multiaddr.Parse("/memory/0")],
                DataDir = dir,
                Compute = o.Compute with { Enabled = true, Provide = false, Client = new ComputeClientOptionsBuilder().Build() },
            })
            .StartAsync();
        try
        {
            Assert.That(bus.Validate, Is.Not.Null, "the requester subscribed to the advertisement topic");
            var envelope = Ad(provider, d.Clock.GetUtcNow());
            var heard = new TopicMessage(AdvertisementProtocol.Topic, envelope, provider.PeerId, provider.PeerId);
            var (verdict, opened) = bus.Validate!(heard);
            Assert.That(verdict, Is.EqualTo(TopicVerdict.Accept));
            Assert.That(opened, Is.InstanceOf<VerifiedAdvertisement>(), "the validator hands over the advertisement it opened");

            // The handler gets the message with its payload gone: it stores the advertisement the validator opened, so it
            // must not need the envelope (a handler that opened the envelope again, signature and all, finds nothing here).
            await bus.Handle!(heard with { Data = ReadOnlyMemory<byte>.Empty }, opened!);
            var held = node.Compute!.Client.Providers();
            Assert.That(held.Select(a => a.Provider), Is.EqualTo(new[] { provider.PeerId }));
            Assert.That(held[0].Ad.Sequence, Is.EqualTo(1UL));

            // A forged envelope (its last byte changed) is still refused by the validator, and nothing is handed over.
            var forged = (byte[])envelope.Clone();
            forged[^1] ^= 0x01;
            var (refused, none) = bus.Validate!(heard with { Data = forged });
            Assert.That(refused, Is.EqualTo(TopicVerdict.Reject));
            Assert.That(none, Is.Null);
        }
        finally
        {
            await node.DisposeAsync();
            try
            {
                Directory.Delete(dir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    });
}
