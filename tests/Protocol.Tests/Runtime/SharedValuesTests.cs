using System.Runtime.CompilerServices;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Runtime;

/// <summary>
/// The table of immutable values a simulated mesh's nodes share: equal values decoded apart come back as one instance;
/// a value nobody holds any more is dropped; a flood of distinct values leaves it bounded by what is held.
/// </summary>
public class SharedValuesTests
{
    private static readonly byte[] Address = Multiaddr.Parse("/ip4/10.0.0.7/tcp/4001").ToBytes();

    [Test]
    public void Share_TwoAddressesDecodedApart_GiveTheFirstInstance()
    {
        var shared = SharedValues.Create();
        var first = Multiaddr.FromBytes(Address);
        var second = Multiaddr.FromBytes(Address);
        Assert.That(second, Is.Not.SameAs(first));

        Assert.That(shared.Share(first), Is.SameAs(first));
        Assert.That(shared.Share(second), Is.SameAs(first), "equal by bytes: the instance held");
        var other = Multiaddr.Parse("/ip4/10.0.0.7/tcp/4002");
        Assert.That(shared.Share(other), Is.SameAs(other), "different bytes: its own");
        Assert.That(shared.AddressCount, Is.EqualTo(2));
        GC.KeepAlive(first);
    }

    [Test]
    public void Share_TwoPeerIdsDecodedApart_ShareTheirBytes()
    {
        var shared = SharedValues.Create();
        var key = PrivateKey.FromRandom(new Random(3));
        var bytes = key.PeerId.ToBytes();
        Assert.That(PeerId.TryFromBytes(bytes, out var a));
        Assert.That(PeerId.TryFromBytes(bytes, out var b));
        Assert.That(b.SharedArray, Is.Not.SameAs(a.SharedArray));

        var kept = shared.Share(a);
        var second = shared.Share(b);
        Assert.That(second.SharedArray, Is.SameAs(a.SharedArray));
        Assert.That(second, Is.EqualTo(b));
        Assert.That(kept.SharedArray, Is.SameAs(a.SharedArray));
        Assert.That(shared.Share(default(PeerId)).IsEmpty, "an empty id stays empty");
    }

    /// <summary>A key is shared only because it is immutable: its bytes come out as a copy, so no holder can change another's.</summary>
    [Test]
    public void Share_TwoKeysDecodedApart_GiveTheFirstInstance_WhoseBytesNoOneCanChange()
    {
        var shared = SharedValues.Create();
        var encoded = PrivateKey.FromRandom(new Random(4)).PublicKey.ToProtobuf();
        Assert.That(PublicKey.TryFromProtobuf(encoded, out var first));
        Assert.That(PublicKey.TryFromProtobuf(encoded, out var second));
        Assert.That(second, Is.Not.SameAs(first));

        Assert.That(shared.Share(first), Is.SameAs(first));
        Assert.That(shared.Share(second), Is.SameAs(first));
        var bytes = first.Data;
        bytes[0] ^= 0xFF;
        Assert.That(first.Data, Is.Not.EqualTo(bytes), "Data is a copy");
        Assert.That(first.ToProtobuf(), Is.EqualTo(encoded), "the shared key unchanged");
        Assert.That(shared.KeyCount, Is.EqualTo(1));
    }

    /// <summary>A mesh that ends frees its tables' handles; anything shared afterwards comes back as it is.</summary>
    [Test]
    public void Dispose_FreesEveryEntry_AndSharesNothingAfterwards()
    {
        var shared = SharedValues.Create();
        var first = shared.Share(Multiaddr.FromBytes(Address));
        Assert.That(shared.AddressCount, Is.EqualTo(1));
        shared.Dispose();
        Assert.That(shared.AddressCount, Is.Zero);
        var second = Multiaddr.FromBytes(Address);
        Assert.That(shared.Share(second), Is.SameAs(second));
        Assert.That(shared.AddressCount, Is.Zero);
        GC.KeepAlive(first);
    }

    [Test]
    public void None_SharesNothing()
    {
        var first = Multiaddr.FromBytes(Address);
        var second = Multiaddr.FromBytes(Address);
        Assert.That(SharedValues.None.Share(first), Is.SameAs(first));
        Assert.That(SharedValues.None.Share(second), Is.SameAs(second));
        Assert.That(SharedValues.None.Enabled, Is.False);
        Assert.That(SharedValues.None.Table(EqualityComparer<string>.Default), Is.Null);
        Assert.That(SharedValues.None.AddressCount, Is.Zero);
    }

    /// <summary>The table holds values weakly: once no one holds an address, a collection and a sweep drop it.</summary>
    [Test]
    public void Share_AValueNoOneHoldsAnyMore_IsDroppedBySweep()
    {
        var shared = SharedValues.Create();
        var held = Multiaddr.Parse("/ip4/10.0.0.1/tcp/1");
        shared.Share(held);
        ShareAndDrop(shared, 10);
        Assert.That(shared.AddressCount, Is.EqualTo(11));

        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        shared.Sweep();

        Assert.That(shared.AddressCount, Is.EqualTo(1), "only the address still held");
        Assert.That(shared.Share(Multiaddr.Parse("/ip4/10.0.0.1/tcp/1")), Is.SameAs(held));
        GC.KeepAlive(held);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ShareAndDrop(SharedValues shared, int count)
    {
        for (var i = 0; i < count; i++)
        {
            shared.Share(Multiaddr.Parse($"/ip4/10.1.0.{i}/tcp/9"));
        }
    }

    /// <summary>
    /// A remote sends endless distinct addresses; the holder (a node) keeps only the newest 100 (its own cap). The table
    /// never grows past its first sweep's size, and after a collection holds exactly what the holder holds.
    /// </summary>
    [Test]
    [Category("Adversarial")]
    public void Share_AFloodOfDistinctValues_StaysBoundedByWhatIsHeld()
    {
        var shared = SharedValues.Create();
        var held = new Multiaddr[100];
        var most = 0;
        for (var i = 0; i < 50_000; i++)
        {
            held[i % held.Length] = shared.Share(Multiaddr.Parse($"/ip4/10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/tcp/{1 + (i % 60_000)}"));
            if (i % 200 == 199)
            {
                GC.Collect(); // what the runtime does on its own, made certain
            }
            most = Math.Max(most, shared.AddressCount);
        }
        Assert.That(most, Is.LessThanOrEqualTo(WeakShareTable<Multiaddr>.MinSweepAt), "never past the first sweep");

        GC.Collect();
        shared.Sweep();
        Assert.That(shared.AddressCount, Is.EqualTo(held.Length), "exactly what the holder holds");
        GC.KeepAlive(held);
    }

    /// <summary>Nodes on other threads (sandbox runs, escapes) sharing the same values at once all get one instance.</summary>
    [Test]
    public void Share_FromManyThreadsAtOnce_GivesEveryoneOneInstance()
    {
        var shared = SharedValues.Create();
        const int threads = 4, values = 2_000;
        var results = new Multiaddr[threads][];
        using var start = new Barrier(threads);
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var mine = new Multiaddr[values];
            start.SignalAndWait();
            for (var i = 0; i < values; i++)
            {
                mine[i] = shared.Share(Multiaddr.Parse($"/ip4/10.2.{i >> 8}.{i & 255}/tcp/7"));
            }
            results[t] = mine;
        })).ToArray();
        foreach (var w in workers)
        {
            w.Start();
        }
        foreach (var w in workers)
        {
            w.Join();
        }
        for (var i = 0; i < values; i++)
        {
            for (var t = 1; t < threads; t++)
            {
                Assert.That(results[t][i], Is.SameAs(results[0][i]), $"value {i}, thread {t}");
            }
        }
        Assert.That(shared.AddressCount, Is.EqualTo(values));
    }
}
