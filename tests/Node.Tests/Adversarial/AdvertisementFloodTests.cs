using System.Text;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// What a node keeps of providers it only heard advertise: the advertisement, in the book (bounded by
/// <see cref="AdvertisementOptions.MaxProviders"/>), and nothing in the peer store until it dials one. Before, every
/// advertisement put its provider into the peer store (~1 KiB each on every node: the mesh's providers on every node,
/// O(N²) in a mesh, and a flood of fresh identities fills the store up to its cap).
/// </summary>
[Category("Adversarial")]
public class AdvertisementFloodTests
{
    private static readonly byte[] HashChain = ComputeCluster.Sample("hashchain");

    /// <summary>A valid advertisement from a fresh identity: listening on a memory address nobody serves, too dear to pick.</summary>
    private static byte[] StrangerAd(PrivateKey key, int index, DateTimeOffset now) => StrangerAd(key, index, now, TimeSpan.FromMinutes(2));

    private static byte[] StrangerAd(PrivateKey key, int index, DateTimeOffset now, TimeSpan lifetime) => AdvertisementCodec.Sign(new Advertisement
    {
        PeerId = key.PeerId.ToBytes(),
        ListenAddresses = [Multiaddr.Parse($"/memory/{1_000_000 + index}").ToBytes()],
        Sequence = 1,
        IssuedAtUnixMs = now.ToUnixTimeMilliseconds(),
        ExpiresAtUnixMs = (now + lifetime).ToUnixTimeMilliseconds(),
        Cores = 8,
        AvailableCores = 8,
        MemoryBytes = 1L << 30,
        SpeedFuelPerSecond = 1_000_000_000,
        PricePerMegaFuel = 1_000_000,
        Policy = ProviderPolicyFlags.AcceptsUnknownModules | ProviderPolicyFlags.Deterministic,
    }, key);

    [Test]
    public void AFloodOfStrangersAdvertisements_AddsNothingToThePeerStore_AndTheHonestProviderIsStillDialledFromItsAd() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var cluster = new TrustCluster(d, seed: 1_111);
        var requester = await cluster.AddAsync("requester", provide: false);
        var provider = await cluster.AddAsync("provider", provide: true);
        await requester.Client.WaitForProvidersAsync(1, ct);
        var store = requester.Potluck.Host.Peers;
        var before = store.Count;

        // Exactly fills the book (the provider and 255 strangers): a stranger provider under a flood larger than the book
        // stays with probability (1 - 1/S)^F only (strangers make way at random), so this test keeps to the peer store;
        // the next one floods 4 times the book against a provider in good standing.
        var strangers = new AdvertisementOptions().MaxProviders - 1;
        var random = new Random(cluster.Seed);
        var attacker = cluster.Hub.Join(PrivateKey.FromRandom(random).PeerId);
        var now = cluster.Time.GetUtcNow();
        for (var i = 0; i < strangers; i++)
        {
            await attacker.PublishAsync(AdvertisementProtocol.Topic, StrangerAd(PrivateKey.FromRandom(random), i, now), ct);
        }
        await Task.Delay(TimeSpan.FromSeconds(1), cluster.Time);

        Assert.Multiple(() =>
        {
            Assert.That(store.Count, Is.EqualTo(before), $"the peer store holds what it held before {strangers} strangers advertised");
            Assert.That(store.Get(provider.PeerId), Is.Null, "an advertisement alone does not put its provider into the peer store");
            Assert.That(requester.Client.HeldAdvertisements, Is.EqualTo(new AdvertisementOptions().MaxProviders), "the book holds as many as its cap, no more");
            Assert.That(requester.Client.Providers().Any(a => a.Provider == provider.PeerId), "the honest provider's advertisement is kept");
        });

        var result = await requester.Node.SubmitAsync(new TaskSubmission
        {
            Module = HashChain,
            Input = Encoding.UTF8.GetBytes("flood"),
            Args = ["100"],
            Fuel = 200_000_000,
            MemoryBytes = 32L << 20,
            MaxPricePerMegaFuel = 50,
        }, ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(result.Provider, Is.EqualTo(provider.PeerId));
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("flood"u8.ToArray(), 100)));
        Assert.That(store.Get(provider.PeerId)?.Addresses, Is.Not.Empty, "the provider it dialled is in the peer store, with its advertised address");
        Assert.That(store.Count, Is.LessThanOrEqualTo(before + 1), "and no stranger");
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(TrustCluster.Earned(provider, requester), Is.EqualTo(result.Cost).And.GreaterThan(0), "the honest provider is paid");
    });

    private static TaskSubmission Work(string input) => new()
    {
        Module = HashChain,
        Input = Encoding.UTF8.GetBytes(input),
        Args = ["100"],
        Fuel = 200_000_000,
        MemoryBytes = 32L << 20,
        MaxPricePerMegaFuel = 50,
    };

    /// <summary>
    /// Before: at the book's cap the entry expiring soonest made way for one that lived longer, so strangers claiming the
    /// longest lifetime (an hour, against an honest provider's 5 minutes) pushed out every honest provider, the ones this
    /// node had used and verified too. Now strangers evict only strangers (at random), and the provider in good standing
    /// stays, is chosen and paid.
    /// </summary>
    [Test]
    public void AFloodClaimingTheLongestLifetime_LeavesTheProviderInGoodStandingInTheBook_AndItIsStillUsedAndPaid() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 2_727);
        var requester = await cluster.AddAsync("requester", provide: false);
        var provider = await cluster.AddAsync("provider", provide: true);
        await requester.Client.WaitForProvidersAsync(1, ct);
        var first = await requester.Node.SubmitAsync(Work("before"), ct);
        Assert.That(first.Status, Is.EqualTo(ExecutionStatus.Success), first.Error);
        Assert.That(requester.Client.Reputation.Get(provider.PeerId).Verified, Is.GreaterThan(0), "a stranger's first result is checked: good standing");

        var cap = new AdvertisementOptions().MaxProviders;
        var strangers = cap * 4;
        var random = new Random(cluster.Seed);
        var attacker = cluster.Hub.Join(PrivateKey.FromRandom(random).PeerId);
        var now = cluster.Time.GetUtcNow();
        var longest = new AdvertisementOptions().MaxLifetime;
        for (var i = 0; i < strangers; i++)
        {
            await attacker.PublishAsync(AdvertisementProtocol.Topic, StrangerAd(PrivateKey.FromRandom(random), i, now, longest), ct);
        }
        await Task.Delay(TimeSpan.FromSeconds(1), cluster.Time);

        Assert.Multiple(() =>
        {
            Assert.That(requester.Client.HeldAdvertisements, Is.EqualTo(cap), "the book at its cap");
            Assert.That(requester.Client.Providers().Any(a => a.Provider == provider.PeerId),
                $"{strangers} strangers' hour-long advertisements leave the provider in good standing in the book");
        });
        var paidBefore = TrustCluster.Earned(provider, requester);
        var result = await requester.Node.SubmitAsync(Work("after the flood"), ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(result.Provider, Is.EqualTo(provider.PeerId));
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("after the flood"u8.ToArray(), 100)));
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(TrustCluster.Earned(provider, requester) - paidBefore, Is.EqualTo(result.Cost).And.GreaterThan(0), "and paid for it");
    });

    /// <summary>A book smaller than the mesh's providers: the requester holds only its cap and still finds and uses one.</summary>
    [Test]
    public void WithMoreProvidersThanTheCap_TheRequesterStillFindsOneAndPays() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 2_728);
        const int cap = 2;
        var requester = await cluster.AddAsync("requester", provide: false,
            configure: c => c with { Client = c.Client with { Advertising = c.Client.Advertising with { MaxProviders = cap } } });
        var providers = new List<TrustCluster.Member>();
        for (var i = 0; i < 5; i++)
        {
            providers.Add(await cluster.AddAsync($"provider{i}", provide: true));
        }
        await requester.Client.WaitForProvidersAsync(cap, ct);
        await Task.Delay(TimeSpan.FromSeconds(5), cluster.Time);
        Assert.That(requester.Client.HeldAdvertisements, Is.EqualTo(cap), "5 providers advertise, the book holds its cap");

        var result = await requester.Node.SubmitAsync(Work("small book"), ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        var used = providers.Single(p => p.PeerId == result.Provider);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(TrustCluster.Earned(used, requester), Is.EqualTo(result.Cost).And.GreaterThan(0), "the provider it used is paid");
    });
}
