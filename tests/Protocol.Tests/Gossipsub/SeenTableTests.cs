using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using Potluck.Protocol.Gossipsub;
using GPb = Potluck.Protocol.Gossipsub.Pb;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// The seen table keyed by a 16-byte keyed digest of the message id (<see cref="SeenKey"/>, <see cref="SeenKeys"/>)
/// instead of the id's bytes: the same answers as a table keyed by the ids themselves, the ids' arrays not kept alive
/// for the seen TTL, and ids an attacker chooses near an honest one (prefixes, extensions, one bit apart) never taken
/// for it.
/// </summary>
[TestFixture]
public class SeenTableTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private static byte[] Key(int seed)
    {
        var key = new byte[16];
        new Random(seed).NextBytes(key);
        return key;
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    [TestCase(4)]
    public void AgreesWithATableKeyedByTheIdsOverRandomInsertsAndExpiries(int seed)
    {
        var random = new Random(seed);
        var ttl = TimeSpan.FromSeconds(120);
        var table = new SeenCache(ttl, new SeenKeys(Key(seed)));
        // The reference: the ids' own bytes as keys, each with its expiry, forgotten once its time is up.
        var reference = new Dictionary<string, DateTimeOffset>();
        var known = new List<byte[]>();
        var now = T0;
        for (var step = 0; step < 20_000; step++)
        {
            var roll = random.Next(100);
            byte[] id;
            if (roll < 45 || known.Count == 0)
            {
                // Mostly default-sized ids, some short, some long enough to take the pooled buffer (over 496 bytes).
                var length = random.Next(10) switch { 0 => random.Next(1, 8), 1 => random.Next(497, 1025), _ => 72 };
                id = new byte[length];
                random.NextBytes(id);
                if (random.Next(4) == 0 && known.Count > 0)
                {
                    // A near miss of an id already there: one bit flipped, one byte more, one byte less.
                    var near = known[random.Next(known.Count)];
                    id = random.Next(3) switch
                    {
                        0 => FlipOneBit(near, random),
                        1 => [.. near, (byte)0],
                        _ => near.Length > 1 ? near[..^1] : [.. near, (byte)1],
                    };
                }
                known.Add(id);
            }
            else
            {
                id = (byte[])known[random.Next(known.Count)].Clone(); // the same id in another array
            }
            var hex = Convert.ToHexString(id);
            var key = table.KeyOf(id);
            switch (random.Next(3))
            {
                case 0:
                    Assert.That(table.Add(key, now), Is.EqualTo(!reference.ContainsKey(hex)), $"step {step}: add");
                    reference.TryAdd(hex, now + ttl);
                    break;
                case 1:
                    ref var record = ref table.GetOrAdd(key, now);
                    Assert.That(Unsafe.IsNullRef(ref record), Is.False);
                    reference.TryAdd(hex, now + ttl);
                    Assert.That(record.Expiry, Is.EqualTo(reference[hex].UtcTicks), $"step {step}: the record's expiry");
                    break;
                default:
                    Assert.That(Unsafe.IsNullRef(ref table.Find(key)), Is.EqualTo(!reference.ContainsKey(hex)), $"step {step}: find");
                    break;
            }
            if (random.Next(50) == 0)
            {
                now += TimeSpan.FromSeconds(random.Next(1, 30));
                table.Prune(now);
                foreach (var (h, expiry) in reference.ToArray())
                {
                    if (expiry <= now)
                    {
                        reference.Remove(h);
                    }
                }
                Assert.That(table.Count, Is.EqualTo(reference.Count), $"step {step}: entries after a prune");
            }
        }
        foreach (var id in known)
        {
            Assert.That(table.Contains(table.KeyOf(id)), Is.EqualTo(reference.ContainsKey(Convert.ToHexString(id))));
        }
    }

    private static byte[] FlipOneBit(byte[] id, Random random)
    {
        var copy = (byte[])id.Clone();
        copy[random.Next(copy.Length)] ^= (byte)(1 << random.Next(8));
        return copy;
    }

    [Test]
    public void TheDigestIsKeyed()
    {
        var id = new byte[72];
        new Random(5).NextBytes(id);
        var a = new SeenKeys(Key(1));
        var b = new SeenKeys(Key(2));
        Assert.That(a.Of(id), Is.EqualTo(new SeenKeys(Key(1)).Of((byte[])id.Clone())), "one key, one id: one digest");
        Assert.That(a.Of(id), Is.Not.EqualTo(b.Of(id)), "another node's key: another digest");
        // Not the id's unkeyed hash: knowing the id function and SHA-256 is not enough to compute a node's keys.
        var unkeyed = SHA256.HashData(id);
        var seen = a.Of(id).ToString();
        Assert.That(seen, Is.Not.EqualTo(Convert.ToHexString(unkeyed, 0, 16)).IgnoreCase);
        Assert.Throws<ArgumentException>(() => _ = new SeenKeys(new byte[15]));
    }

    [Test]
    public void AnHonestMessageIsDeliveredAfterAFloodOfIdsChosenNearIt()
    {
        // The attacker knows the honest author's next message id (author || seqno) and sends, before it, messages of its
        // own whose ids (under a content-based id function it can steer: the id is the data) are that id with one bit
        // flipped, one byte added or one byte cut. None may be taken for the honest one.
        var f = new RouterFixture(2, o => o with { MessageIdFunction = (_, _, _, data) => data.ToArray() });
        var honest = f.Peers[0];
        var attacker = f.Peers[1];
        f.Router.Subscribe(RouterFixture.Topic, f.Now);
        f.Drain();
        var honestData = new byte[72];
        new Random(9).NextBytes(honestData);
        var random = new Random(10);
        ulong seqno = 1;
        for (var i = 0; i < 3_000; i++)
        {
            byte[] near = (i % 3) switch
            {
                0 => FlipOneBit(honestData, random),
                1 => [.. honestData, (byte)random.Next(256)],
                _ => honestData[..^(1 + random.Next(8))],
            };
            f.Receive(1, RouterFixture.Signed(attacker, RouterFixture.Topic, near, seqno++));
        }
        var flood = f.Drain().Deliveries.Count;
        f.Receive(0, RouterFixture.Signed(honest, RouterFixture.Topic, honestData, 1));
        var deliveries = f.Drain().Deliveries;
        Assert.That(deliveries.Select(d => d.Data.ToArray()), Has.One.EqualTo(honestData), "the honest message is delivered");
        Assert.That(deliveries[0].ReceivedFrom, Is.EqualTo(honest.PeerId));
        Assert.That(f.Router.Counters.Duplicates, Is.EqualTo(3_000 - flood), "only the attacker's own repeats were duplicates");
    }

    [Test]
    public void ASeenMessageDoesNotKeepItsIdAlive()
    {
        var f = new RouterFixture(1);
        f.Router.Subscribe(RouterFixture.Topic, f.Now);
        f.Drain();
        var message = RouterFixture.Signed(f.Peers[0], RouterFixture.Topic, [1, 2, 3], 42);
        var id = RouterFixture.IdOf(message);
        var weak = ReceiveAndDrop(f, message);
        // Past the message cache's windows nothing but the seen table remembers the message.
        f.Heartbeat(f.Options.HistoryLength + 1);
        Assert.That(f.Router.CachedMessages, Is.Zero);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.That(f.Router.HasSeen(id), Is.True, "still seen (the TTL is 120 s)");
        Assert.That(weak.TryGetTarget(out _), Is.False, "the id's array was let go of: the table keeps a 16-byte digest");
        f.Receive(0, message);
        Assert.That(f.Drain().Deliveries, Is.Empty, "a copy is still a duplicate");
        Assert.That(f.Router.Counters.Duplicates, Is.EqualTo(1));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference<byte[]> ReceiveAndDrop(RouterFixture f, GPb.Message message)
    {
        f.Receive(0, message);
        var delivered = f.Drain().Deliveries.Single();
        return new WeakReference<byte[]>(delivered.Id.Raw); // the array the router made for the id
    }
}
