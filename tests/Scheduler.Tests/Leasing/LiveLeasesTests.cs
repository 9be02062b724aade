using Potluck.Protocol.Identity;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Tests.Leasing;

/// <summary>
/// <see cref="ProviderLeaseRegistry.LiveLeasesOf"/> (what a provider checks a new request against, per requester) counts
/// exactly what a scan of every tracked lease would: the requester's leases not yet finished, through offers, cancels,
/// lapses, prunes and evictions at the tracking limit.
/// </summary>
public class LiveLeasesTests
{
    private static LeaseRequest Request(ulong id, long maxPrice) => new()
    {
        RequestId = id, ModuleHash = Enumerable.Repeat((byte)1, 32).ToArray(), ModuleSize = 10, InputHash = Enumerable.Repeat((byte)2, 32).ToArray(),
        InputSize = 0, FuelLimit = 5, MemoryLimitBytes = 1 << 20,
        DeadlineUnixMs = (LeaseHarness.T0 + TimeSpan.FromMinutes(2)).ToUnixTimeMilliseconds(), MaxPricePerMegaFuel = maxPrice,
    };

    private static int Scan(ProviderLeaseRegistry registry, PeerId requester) =>
        registry.Leases.Count(l => l.FinishedAt is null && l.Requester == requester);

    [Test]
    public void LiveLeasesOf_CountsEachRequestersUnfinishedLeases_AsAScanWould()
    {
        var h = new LeaseHarness(new LeaseOptions { MaxTrackedLeases = 24, FinishedRetention = TimeSpan.FromSeconds(20) }, cores: 16);
        var requesters = Enumerable.Range(10, 3).Select(i => PrivateKey.FromRandom(new Random(i))).ToArray();
        var random = new Random(7);
        var live = new List<ProviderLease>();
        ulong next = 1;
        var seen = new HashSet<int>();
        for (var round = 0; round < 400; round++)
        {
            h.Now = LeaseHarness.T0 + TimeSpan.FromSeconds(round * 0.5);
            var who = requesters[random.Next(requesters.Length)];
            switch (random.Next(5))
            {
                case 0 or 1:
                    // A request: offered while a core is free, refused for price one time in four (remembered, never counted).
                    var dispatch = h.Registry.Handle(who.PublicKey, Request(next++, random.Next(4) == 0 ? 1 : 20), h.Now);
                    if (dispatch.Lease is { } lease)
                    {
                        live.Add(lease);
                    }
                    break;
                case 2 when live.Count > 0:
                    var cancelled = live[random.Next(live.Count)];
                    h.Registry.Handle(who.PublicKey, new LeaseCancel { RequestId = cancelled.Terms.RequestId, Reason = "done" }, h.Now);
                    break;
                case 3 when live.Count > 0:
                    // Offers lapse when not accepted in time.
                    live[random.Next(live.Count)].OnTimer(h.Now + TimeSpan.FromMinutes(1));
                    break;
                default:
                    h.Registry.Prune(h.Now);
                    break;
            }
            live.RemoveAll(l => l.FinishedAt is not null);
            foreach (var r in requesters)
            {
                var count = h.Registry.LiveLeasesOf(r.PeerId);
                Assert.That(count, Is.EqualTo(Scan(h.Registry, r.PeerId)), $"round {round}, requester {r.PeerId}");
                seen.Add(count);
            }
        }
        Assert.That(seen.Max(), Is.GreaterThanOrEqualTo(3), "the run held several leases of one requester at once");
        Assert.That(seen, Does.Contain(0), "and every lease of a requester finished at some point");
    }

    [Test]
    public void LiveLeasesOf_ANewRequesterOrOneWhoseLeasesAllFinished_HoldsNone()
    {
        var h = new LeaseHarness(cores: 4);
        var requester = h.RequesterKey;
        Assert.That(h.Registry.LiveLeasesOf(requester.PeerId), Is.Zero);
        var first = h.Registry.Handle(requester.PublicKey, Request(1, 20), h.Now).Lease!;
        var second = h.Registry.Handle(requester.PublicKey, Request(2, 20), h.Now).Lease!;
        Assert.That(h.Registry.LiveLeasesOf(requester.PeerId), Is.EqualTo(2));
        Assert.That(h.Registry.LiveLeasesOf(h.ProviderKey.PeerId), Is.Zero, "another peer holds none of them");
        first.Cancel("done", h.Now);
        Assert.That(h.Registry.LiveLeasesOf(requester.PeerId), Is.EqualTo(1));
        second.Cancel("done", h.Now);
        Assert.That(h.Registry.LiveLeasesOf(requester.PeerId), Is.Zero);
        Assert.That(h.Registry.Find(requester.PeerId, 1), Is.Not.Null, "finished leases are still remembered for retries");
    }
}
