using System.Text;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// The book sample a newcomer asks a few peers for (<see cref="AdvertisementProtocol.SampleProtocolId"/>) now that an
/// unchanged advertisement is republished every 10 minutes: a newcomer learns providers it is not connected to within
/// seconds; every answer is bounded before it is read and checked envelope by envelope, and one with garbage anywhere is
/// refused whole, its peer penalised; a peer that does not speak the protocol costs nothing. And a provider that went
/// away stops being chosen once its grace has passed, though its advertisement lives 30 minutes.
/// </summary>
[Category("Adversarial")]
public class AdvertisementSampleTests
{
    private static readonly byte[] HashChain = ComputeCluster.Sample("hashchain");

    private static TaskSubmission Work(string input) => new()
    {
        Module = HashChain,
        Input = Encoding.UTF8.GetBytes(input),
        Args = ["100"],
        Fuel = 200_000_000,
        MemoryBytes = 32L << 20,
        MaxPricePerMegaFuel = 50,
    };

    /// <summary>A signed advertisement of a fresh identity (sequence, issue time and lifetime as given).</summary>
    private static byte[] AdOf(PrivateKey key, DateTimeOffset issued, TimeSpan lifetime, ulong sequence = 1, PeerId? claimed = null) =>
        AdvertisementCodec.Sign(new Advertisement
        {
            PeerId = (claimed ?? key.PeerId).ToBytes(),
            ListenAddresses = [Multiaddr.Parse($"/memory/{2_000_000 + (int)(sequence % 1000)}").ToBytes()],
            Sequence = sequence,
            IssuedAtUnixMs = issued.ToUnixTimeMilliseconds(),
            ExpiresAtUnixMs = (issued + lifetime).ToUnixTimeMilliseconds(),
            Cores = 2,
            AvailableCores = 2,
            MemoryBytes = 1L << 30,
            SpeedFuelPerSecond = 1_000_000_000,
            PricePerMegaFuel = 1_000_000,
            RuntimeVersion = "wasmtime 50.0.1",
            Policy = ProviderPolicyFlags.Deterministic,
        }, key);

    /// <summary>Replaces <paramref name="member"/>'s sample answerer with one that reads the request and writes <paramref name="answer"/>'s raw bytes.</summary>
    private static void Answers(TrustCluster.Member member, Func<byte[]> answer) =>
        member.Potluck.Host.SetStreamHandler(AdvertisementProtocol.SampleProtocolId, async (stream, ct) =>
        {
            await LengthPrefixed.ReadAsync(stream.Input, 64, AdvertisementProtocol.SampleProtocolId, ct);
            await stream.Output.WriteAsync(answer(), ct);
            await stream.Output.CompleteAsync();
        });

    private static byte[] Framed(IEnumerable<byte[]> envelopes)
    {
        var buffer = new List<byte>();
        var prefix = new byte[10];
        foreach (var e in envelopes)
        {
            buffer.AddRange(prefix.AsSpan(0, Varint.Write(prefix, (ulong)e.Length)).ToArray());
            buffer.AddRange(e);
        }
        return [.. buffer];
    }

    private static Task ConnectAsync(TrustCluster.Member from, TrustCluster.Member to) =>
        from.Potluck.Host.ConnectAsync(to.Potluck.Host.ListenAddresses[0].WithPeer(to.PeerId), CancellationToken.None).AsTask();

    [Test]
    public void ANewcomer_LearnsProvidersItIsNotConnectedTo_WithinSeconds_AndLeasesFromOne() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 2_024);
        var providers = new List<TrustCluster.Member>();
        for (var i = 0; i < 3; i++)
        {
            providers.Add(await cluster.AddAsync($"provider{i}", provide: true));
        }
        var relay = await cluster.AddAsync("relay", provide: false);
        await relay.Client.WaitForProvidersAsync(3, ct);
        await Task.Delay(TimeSpan.FromSeconds(5), cluster.Time);

        // Joins after every provider published: gossip brings their next advertisement in 10 minutes.
        var newcomer = await cluster.AddAsync("newcomer", provide: false);
        Assert.That(newcomer.Client.Providers(), Is.Empty);
        var joined = cluster.Time.GetUtcNow();
        await ConnectAsync(newcomer, relay);
        await Task.Delay(TimeSpan.FromSeconds(3), cluster.Time);

        Assert.Multiple(() =>
        {
            Assert.That(newcomer.Client.Providers().Select(a => a.Provider), Is.EquivalentTo(providers.Select(p => p.PeerId)),
                "every provider the relay holds, 3 virtual seconds after the newcomer connected to the relay alone");
            Assert.That(newcomer.Potluck.Host.Connections.Select(c => c.RemotePeer).Distinct(), Is.EqualTo(new[] { relay.PeerId }));
            Assert.That(newcomer.Client.Samples.Asked, Is.EqualTo(1));
            Assert.That(relay.Client.Samples.Answered, Is.EqualTo(1));
        });
        var result = await newcomer.Node.SubmitAsync(Work("newcomer"), ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(providers.Select(p => p.PeerId), Does.Contain(result.Provider));
        Assert.That(cluster.Time.GetUtcNow() - joined, Is.LessThan(TimeSpan.FromMinutes(1)));
    });

    public enum Garbage { Forged, AnotherSigner, MoreThanAsked, MoreBytesThanAsked, EnvelopeOverLimit, NotAnEnvelope }

    [TestCase(Garbage.Forged)]
    [TestCase(Garbage.AnotherSigner)]
    [TestCase(Garbage.MoreThanAsked)]
    [TestCase(Garbage.MoreBytesThanAsked)]
    [TestCase(Garbage.EnvelopeOverLimit)]
    [TestCase(Garbage.NotAnEnvelope)]
    public void ASampleAnswerWithGarbage_IsRefusedWhole_ThePeerPenalised_AndTheHonestBookUnchanged(Garbage garbage) => VirtualTimeDriver.Run(async d =>
    {
        await using var cluster = new TrustCluster(d, seed: 3_000 + (int)garbage);
        var provider = await cluster.AddAsync("provider", provide: true);
        var attacker = await cluster.AddAsync("attacker", provide: false);
        await Task.Delay(TimeSpan.FromSeconds(1), cluster.Time);
        var newcomer = await cluster.AddAsync("newcomer", provide: false,
            configure: c => c with { Client = c.Client with { Advertising = c.Client.Advertising with { SampleMaxBytes = 4096 } } });
        using var metrics = new Potluck.Node.Control.MetricsExporter(newcomer.Potluck);
        await ConnectAsync(newcomer, provider); // the honest book: the provider's own advertisement, fetched on connecting
        await Task.Delay(TimeSpan.FromSeconds(2), cluster.Time);
        var before = newcomer.Client.Providers().Select(a => (a.Provider, a.Ad.Sequence)).ToList();
        Assert.That(before.Select(b => b.Provider), Is.EqualTo(new[] { provider.PeerId }));

        var random = new Random(cluster.Seed);
        var now = cluster.Time.GetUtcNow();
        byte[] Valid() => AdOf(PrivateKey.FromRandom(random), now, TimeSpan.FromMinutes(30));
        Answers(attacker, () => garbage switch
        {
            // A valid advertisement first: garbage later in the answer still leaves nothing of it in the book.
            Garbage.Forged => Framed([Valid(), Flip(Valid())]),
            // Signed by one key, naming another peer. (Naming a provider the book holds at a newer sequence, as the provider's
            // own is, would be skipped unverified: the book refuses it whatever its signature.)
            Garbage.AnotherSigner => Framed([Valid(), AdOf(PrivateKey.FromRandom(random), now, TimeSpan.FromMinutes(30), claimed: PrivateKey.FromRandom(random).PeerId)]),
            Garbage.MoreThanAsked => Framed(Enumerable.Range(0, new AdvertisementOptions().SampleSize + 1).Select(_ => Valid())),
            Garbage.MoreBytesThanAsked => Framed(Enumerable.Range(0, 20).Select(_ => Valid())), // ~5.5 KiB against the newcomer's 4 KiB
            Garbage.EnvelopeOverLimit => Framed([Valid(), new byte[new AdvertisementOptions().MaxEnvelopeBytes + 1]]),
            _ => Framed([Valid(), Encoding.UTF8.GetBytes("not an envelope")]),
        });
        await ConnectAsync(newcomer, attacker);
        await Task.Delay(TimeSpan.FromSeconds(3), cluster.Time);

        var budgets = newcomer.Potluck.Host.Budgets;
        Assert.Multiple(() =>
        {
            Assert.That(newcomer.Client.Providers().Select(a => (a.Provider, a.Ad.Sequence)), Is.EqualTo(before), "the honest book, unchanged");
            Assert.That(newcomer.Client.Samples.Garbage, Is.EqualTo(1));
            Assert.That(newcomer.Client.Samples.Accepted, Is.Zero);
            Assert.That(budgets.ScoreOf(attacker.PeerId), Is.EqualTo(-budgets.Options.MalformedPenalty).Within(0.5), "penalised as malformed");
            Assert.That(budgets.ScoreOf(provider.PeerId), Is.Zero.Within(0.01), "the honest peer is not");
        });
        using var exported = new MemoryStream();
        await metrics.WriteAsync(exported, CancellationToken.None);
        var text = Encoding.UTF8.GetString(exported.ToArray());
        Assert.That(text, Does.Contain("potluck_ads_samples_total{outcome=\"garbage\"} 1"), text);
    });

    private static byte[] Flip(byte[] envelope)
    {
        var forged = (byte[])envelope.Clone();
        forged[^1] ^= 0x01; // the signature's last byte
        return forged;
    }

    [Test]
    public void ExpiredAndReplayedAdvertisementsInASample_AreRefusedOneByOne_AndThePeerIsNotPenalised() => VirtualTimeDriver.Run(async d =>
    {
        await using var cluster = new TrustCluster(d, seed: 4_100);
        var peer = await cluster.AddAsync("peer", provide: false);
        var newcomer = await cluster.AddAsync("newcomer", provide: false);
        var random = new Random(cluster.Seed);
        var held = PrivateKey.FromRandom(random);
        var now = cluster.Time.GetUtcNow();
        var newer = AdOf(held, now, TimeSpan.FromMinutes(30), sequence: 5);
        // The newcomer heard sequence 5 by gossip.
        await cluster.Hub.Join(PrivateKey.FromRandom(random).PeerId).PublishAsync(AdvertisementProtocol.Topic, newer, CancellationToken.None);
        await Task.Delay(TimeSpan.FromSeconds(1), cluster.Time);
        Assert.That(newcomer.Client.Providers().Single().Ad.Sequence, Is.EqualTo(5UL));

        var expiredKey = PrivateKey.FromRandom(random);
        var freshKey = PrivateKey.FromRandom(random);
        now = cluster.Time.GetUtcNow();
        Answers(peer, () => Framed([
            AdOf(held, now - TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(30), sequence: 3), // a replay of an older one
            newer,                                                                             // byte for byte what is held
            AdOf(expiredKey, now - TimeSpan.FromMinutes(31), TimeSpan.FromMinutes(30)),        // expired a minute ago
            AdOf(freshKey, now, TimeSpan.FromMinutes(30)),
        ]));
        await ConnectAsync(newcomer, peer);
        await Task.Delay(TimeSpan.FromSeconds(3), cluster.Time);

        var book = newcomer.Client.Providers().ToDictionary(a => a.Provider, a => a.Ad.Sequence);
        var samples = newcomer.Client.Samples;
        Assert.Multiple(() =>
        {
            Assert.That(book[held.PeerId], Is.EqualTo(5UL), "the replay did not roll it back");
            Assert.That(book.ContainsKey(expiredKey.PeerId), Is.False);
            Assert.That(book.ContainsKey(freshKey.PeerId), Is.True, "a live, signed advertisement from the same answer is taken");
            Assert.That(samples.Skipped, Is.EqualTo(2), "the replay and the copy of what is held: skipped without a signature check");
            Assert.That(samples.Refused, Is.EqualTo(1), "the expired one");
            Assert.That(samples.Garbage, Is.Zero);
            Assert.That(newcomer.Potluck.Host.Budgets.ScoreOf(peer.PeerId), Is.Zero.Within(0.01));
        });
    });

    [Test]
    public void PeersThatDoNotSpeakTheSampleProtocol_AreHarmless_AndTheNewcomerAsksAnother() => VirtualTimeDriver.Run(async d =>
    {
        await using var cluster = new TrustCluster(d, seed: 5_200);
        var provider = await cluster.AddAsync("provider", provide: true);
        var relay = await cluster.AddAsync("relay", provide: false);
        var older = new List<TrustCluster.Member>();
        for (var i = 0; i < new AdvertisementOptions().SamplePeers + 1; i++)
        {
            var node = await cluster.AddAsync($"older{i}", provide: false);
            node.Potluck.Host.RemoveStreamHandler(AdvertisementProtocol.SampleProtocolId); // a node from before the protocol
            older.Add(node);
        }
        await relay.Client.WaitForProvidersAsync(1, CancellationToken.None);
        await Task.Delay(TimeSpan.FromSeconds(1), cluster.Time);
        var newcomer = await cluster.AddAsync("newcomer", provide: false);
        foreach (var node in older)
        {
            await ConnectAsync(newcomer, node);
            await Task.Delay(TimeSpan.FromSeconds(1), cluster.Time);
        }
        Assert.That(newcomer.Client.Providers(), Is.Empty);
        await ConnectAsync(newcomer, relay);
        await Task.Delay(TimeSpan.FromSeconds(2), cluster.Time);

        Assert.Multiple(() =>
        {
            Assert.That(newcomer.Client.Samples.Unsupported, Is.EqualTo(older.Count), "each older node answered \"na\", and took no slot");
            Assert.That(newcomer.Client.Samples.Asked, Is.EqualTo(1));
            Assert.That(newcomer.Client.Providers().Select(a => a.Provider), Is.EqualTo(new[] { provider.PeerId }));
            Assert.That(older.Select(o => newcomer.Potluck.Host.Budgets.ScoreOf(o.PeerId)), Is.All.EqualTo(0).Within(0.01));
        });
    });

    [Test]
    public void AProviderThatWentAway_IsNoLongerChosen_OnceTheGraceHasPassed() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 6_300);
        var gone = await cluster.AddAsync("gone", provide: true, price: 5);
        var staying = await cluster.AddAsync("staying", provide: true, price: 5);
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(2, ct);
        await cluster.StopAsync(gone);
        var attempts = new List<AttemptRecord>();
        requester.Client.AttemptEnded += attempts.Add;

        // Inside the grace a dead provider may still be tried (and the job moves on): until it is.
        for (var i = 0; i < 20 && !attempts.Any(a => a.Provider == gone.PeerId); i++)
        {
            var result = await requester.Node.SubmitAsync(Work($"before {i}"), ct);
            Assert.That(result.Provider, Is.EqualTo(staying.PeerId));
        }
        Assert.That(attempts.Where(a => a.Provider == gone.PeerId).Select(a => a.Outcome), Is.Not.Empty.And.All.EqualTo(LeaseOutcomeKind.Unreachable));
        await Task.Delay(new AdvertisementOptions().UnreachableGrace, cluster.Time);
        attempts.Clear();

        for (var i = 0; i < 10; i++)
        {
            var result = await requester.Node.SubmitAsync(Work($"after {i}"), ct);
            Assert.That(result.Provider, Is.EqualTo(staying.PeerId));
        }
        Assert.Multiple(() =>
        {
            Assert.That(attempts.Select(a => a.Provider), Is.All.EqualTo(staying.PeerId), "the provider that went away was not tried again");
            Assert.That(requester.Client.Providers().Select(a => a.Provider), Is.EqualTo(new[] { staying.PeerId }));
        });
    });
}
