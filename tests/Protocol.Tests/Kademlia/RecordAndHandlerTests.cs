using FsCheck;
using FsCheck.Fluent;
using Google.Protobuf;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Multiformats;
using KadPb = Potluck.Protocol.Kademlia.Pb;

namespace Potluck.Protocol.Tests.Kademlia;

public class RecordAndHandlerTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private static PrivateKey Key(int seed) => PrivateKey.FromRandom(new Random(seed));

    [Test]
    public void PublicKeyRecord_MatchingKey_IsValid_AnythingElseIsNot()
    {
        var registry = RecordValidatorRegistry.CreateDefault();
        var a = Key(1);
        var b = Key(2);
        var key = PublicKeyRecordValidator.KeyFor(a.PeerId);

        Assert.That(registry.Validate(key, a.PublicKey.ToProtobuf()), Is.True);
        Assert.That(registry.Validate(key, b.PublicKey.ToProtobuf()), Is.False, "someone else's key");
        Assert.That(registry.Validate(key, [1, 2, 3]), Is.False, "garbage value");
        Assert.That(registry.Validate("/pk/notapeer"u8, a.PublicKey.ToProtobuf()), Is.False);
        Assert.That(registry.Validate("/other/x"u8, [1]), Is.False, "no validator for the namespace");
        Assert.That(registry.Validate("nonamespace"u8, [1]), Is.False);
        Assert.That(registry.Select(key, [a.PublicKey.ToProtobuf()]), Is.Zero);
        Assert.That(registry.Select("/other/x"u8, [[1]]), Is.EqualTo(-1));
    }

    [Test]
    public void Registry_CustomNamespace_SelectPicksTheValidatorsChoice()
    {
        var registry = new RecordValidatorRegistry();
        registry.Add("seq", new HighestByteValidator());
        Assert.That(registry.Validate("/seq/a"u8, [5]), Is.True);
        Assert.That(registry.Select("/seq/a"u8, [[1], [9], [4]]), Is.EqualTo(1));
        Assert.Throws<ArgumentException>(() => registry.Add("a/b", new HighestByteValidator()));
    }

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public bool Validate_AnyBytes_NeverThrows(byte[] key, byte[] value)
    {
        var registry = RecordValidatorRegistry.CreateDefault();
        var withPrefix = "/pk/"u8.ToArray().Concat(key).ToArray();
        return !registry.Validate(key, value) | true && registry.Validate(withPrefix, value) == registry.Validate(withPrefix, value);
    }

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public bool TryParse_AnyBytes_ReturnsAStatusWithoutThrowing(byte[] bytes)
    {
        var ok = KadMessages.TryParse(bytes, new KademliaOptions(), out var message, out var error);
        return ok ? error == "" && message is not null : error.Length > 0;
    }

    [FsCheck.NUnit.Property(MaxTest = 200)]
    public Property Message_RoundTripsThroughTheBoundedDecoder() =>
        Prop.ForAll(ArbMap.Default.GeneratorFor<byte[]>().ToArbitrary(), Gen.Choose(0, 30).ToArbitrary(), (key, n) =>
        {
            var random = new Random(n);
            var message = new KadPb.Message { Type = KadPb.Message.Types.MessageType.GetProviders, Key = ByteString.CopyFrom(key) };
            for (var i = 0; i < n; i++)
            {
                message.CloserPeers.Add(KadMessages.ToPb(KadTestSupport.RandomPeer(random), [Multiaddr.Parse($"/memory/{i + 1}")], i % 2 == 0));
            }
            var ok = KadMessages.TryParse(message.ToByteArray(), new KademliaOptions(), out var parsed, out _);
            return ok && parsed.Equals(message) && KadMessages.ReadPeers(parsed.CloserPeers, new KademliaOptions(), default).Count == n;
        });

    [Test]
    public void TryParse_TooManyPeers_IsRefusedBeforeMaterialisingThem()
    {
        var message = new KadPb.Message { Type = KadPb.Message.Types.MessageType.FindNode };
        for (var i = 0; i < 101; i++)
        {
            message.CloserPeers.Add(new KadPb.Message.Types.Peer());
        }
        Assert.That(KadMessages.TryParse(message.ToByteArray(), new KademliaOptions(), out _, out var error), Is.False);
        Assert.That(error, Does.Contain("peers"));
    }

    [Test]
    public void TryParse_OversizedRecordOrKey_OrUnknownType_IsRefused()
    {
        var options = new KademliaOptions { MaxRecordSize = 10, MaxKeySize = 8 };
        var bigValue = new KadPb.Message { Type = KadPb.Message.Types.MessageType.PutValue, Record = new KadPb.Record { Value = ByteString.CopyFrom(new byte[11]) } };
        var bigKey = new KadPb.Message { Type = KadPb.Message.Types.MessageType.GetValue, Key = ByteString.CopyFrom(new byte[9]) };
        var badType = new KadPb.Message { Type = (KadPb.Message.Types.MessageType)42 };
        Assert.That(KadMessages.TryParse(bigValue.ToByteArray(), options, out _, out _), Is.False);
        Assert.That(KadMessages.TryParse(bigKey.ToByteArray(), options, out _, out _), Is.False);
        Assert.That(KadMessages.TryParse(badType.ToByteArray(), options, out _, out _), Is.False);
    }

    [Test]
    public void ReadPeers_SkipsBadIdsSelfAndDuplicates_CapsAddresses_DropsAddressesOfOtherPeers()
    {
        var random = new Random(3);
        var self = KadTestSupport.RandomPeer(random);
        var good = KadTestSupport.RandomPeer(random);
        var other = KadTestSupport.RandomPeer(random);
        var addresses = Enumerable.Range(1, 20).Select(i => Multiaddr.Parse($"/memory/{i}")).ToList();
        addresses.Add(Multiaddr.Parse("/memory/99").WithPeer(other));
        var peers = new[]
        {
            new KadPb.Message.Types.Peer { Id = ByteString.CopyFrom([1, 2, 3]) },
            KadMessages.ToPb(self, addresses, false),
            KadMessages.ToPb(good, addresses, false),
            KadMessages.ToPb(good, addresses, false),
        };
        var read = KadMessages.ReadPeers(peers, new KademliaOptions { MaxAddressesPerPeer = 16 }, self);
        Assert.That(read, Has.Count.EqualTo(1));
        Assert.That(read[0].Id, Is.EqualTo(good));
        Assert.That(read[0].Addresses, Has.Count.EqualTo(16));
    }

    [Test]
    public void Stores_AreBounded_AndExpire()
    {
        var records = new RecordStore(maxRecords: 2, maxValueSize: 4);
        Assert.That(records.Put([1], [1], T0, false), Is.EqualTo(StoreResult.Stored));
        Assert.That(records.Put([2], [2], T0, true), Is.EqualTo(StoreResult.Stored));
        Assert.That(records.Put([3], [3], T0, false), Is.EqualTo(StoreResult.Full));
        Assert.That(records.Put([1], [1, 1], T0, false), Is.EqualTo(StoreResult.Stored), "replacing needs no new slot");
        Assert.That(records.Put([1], new byte[5], T0, false), Is.EqualTo(StoreResult.TooLarge));
        Assert.That(records.RemoveExpired(T0.AddHours(1), TimeSpan.FromHours(1)), Is.EqualTo(1), "only the foreign record expires");
        Assert.That(records.Get([2]), Is.Not.Null);
        Assert.That(records.DueForRepublish(T0.AddHours(1), TimeSpan.FromHours(1)), Has.Count.EqualTo(1));

        var random = new Random(4);
        var providers = new ProviderStore(maxKeys: 1, maxProvidersPerKey: 2);
        var (p1, p2, p3) = (KadTestSupport.RandomPeer(random), KadTestSupport.RandomPeer(random), KadTestSupport.RandomPeer(random));
        Assert.That(providers.Add([1], p1, T0.AddHours(1)), Is.True);
        Assert.That(providers.Add([1], p2, T0.AddHours(2)), Is.True);
        Assert.That(providers.Add([1], p3, T0.AddHours(2)), Is.False, "per-key cap");
        Assert.That(providers.Add([2], p3, T0.AddHours(2)), Is.False, "key cap");
        Assert.That(providers.Get([1], T0.AddMinutes(90)), Is.EqualTo(new[] { p2 }));
        Assert.That(providers.RemoveExpired(T0.AddMinutes(90)), Is.EqualTo(1));
    }

    private static (KadRequestHandler Handler, RoutingTable Table, RecordStore Records, KademliaOptions Options) Handler(PeerId self)
    {
        var options = new KademliaOptions();
        var table = new RoutingTable(self);
        var records = new RecordStore(10, options.MaxRecordSize);
        var handler = new KadRequestHandler(table, records, new ProviderStore(10, 20), options,
            p => ([Multiaddr.Parse("/memory/7")], false));
        return (handler, table, records, options);
    }

    [Test]
    public void Handler_PutThenGet_ValidRecord_IsStoredAndReturned()
    {
        var random = new Random(5);
        var (handler, _, records, _) = Handler(KadTestSupport.RandomPeer(random));
        var owner = Key(9);
        var key = ByteString.CopyFrom(PublicKeyRecordValidator.KeyFor(owner.PeerId));
        var value = ByteString.CopyFrom(owner.PublicKey.ToProtobuf());
        var put = new KadPb.Message { Type = KadPb.Message.Types.MessageType.PutValue, Key = key, Record = new KadPb.Record { Key = key, Value = value } };

        var echo = handler.Handle(owner.PeerId, put, T0);
        Assert.That(echo, Is.EqualTo(put));
        Assert.That(records.Count, Is.EqualTo(1));

        var got = handler.Handle(owner.PeerId, new KadPb.Message { Type = KadPb.Message.Types.MessageType.GetValue, Key = key }, T0.AddHours(1));
        Assert.That(got!.Record.Value, Is.EqualTo(value));
    }

    [Test]
    public void Handler_PutInvalidOrMismatchedRecord_IsAViolation_AndNothingIsStored()
    {
        var random = new Random(6);
        var (handler, _, records, _) = Handler(KadTestSupport.RandomPeer(random));
        var owner = Key(10);
        var key = ByteString.CopyFrom(PublicKeyRecordValidator.KeyFor(owner.PeerId));
        var wrongValue = ByteString.CopyFrom(Key(11).PublicKey.ToProtobuf());
        var invalid = new KadPb.Message { Type = KadPb.Message.Types.MessageType.PutValue, Key = key, Record = new KadPb.Record { Key = key, Value = wrongValue } };
        var mismatched = new KadPb.Message { Type = KadPb.Message.Types.MessageType.PutValue, Key = key, Record = new KadPb.Record { Key = ByteString.CopyFromUtf8("/pk/x"), Value = wrongValue } };
        var unknownNs = new KadPb.Message { Type = KadPb.Message.Types.MessageType.PutValue, Key = ByteString.CopyFromUtf8("/v/x"), Record = new KadPb.Record { Key = ByteString.CopyFromUtf8("/v/x"), Value = wrongValue } };

        Assert.Throws<ProtocolViolationException>(() => handler.Handle(owner.PeerId, invalid, T0));
        Assert.Throws<ProtocolViolationException>(() => handler.Handle(owner.PeerId, mismatched, T0));
        Assert.Throws<ProtocolViolationException>(() => handler.Handle(owner.PeerId, unknownNs, T0));
        Assert.Throws<ProtocolViolationException>(() => handler.Handle(owner.PeerId, new KadPb.Message { Type = KadPb.Message.Types.MessageType.GetValue }, T0));
        Assert.That(records.Count, Is.Zero);
    }

    [Test]
    public void Handler_AddProvider_OnlyTheSenderMayAnnounceItself_GetProvidersReturnsIt()
    {
        var random = new Random(7);
        var (handler, table, _, _) = Handler(KadTestSupport.RandomPeer(random));
        var sender = KadTestSupport.RandomPeer(random);
        var forged = KadTestSupport.RandomPeer(random);
        var key = ByteString.CopyFromUtf8("content");
        var add = new KadPb.Message { Type = KadPb.Message.Types.MessageType.AddProvider, Key = key };
        add.ProviderPeers.Add(KadMessages.ToPb(forged, [Multiaddr.Parse("/memory/1")], false));
        add.ProviderPeers.Add(KadMessages.ToPb(sender, [Multiaddr.Parse("/memory/2")], false));
        for (var i = 0; i < 30; i++)
        {
            table.AddOrRefresh(KadTestSupport.RandomPeer(random));
        }

        Assert.That(handler.Handle(sender, add, T0), Is.Null);
        Assert.That(handler.LearnedProviders.Select(p => p.Id), Is.EqualTo(new[] { sender }));

        var response = handler.Handle(forged, new KadPb.Message { Type = KadPb.Message.Types.MessageType.GetProviders, Key = key }, T0);
        Assert.That(response!.ProviderPeers.Select(p => p.Id), Is.EqualTo(new[] { ByteString.CopyFrom(sender.Bytes) }));
        Assert.That(response.CloserPeers, Has.Count.EqualTo(20));
        Assert.That(handler.Handle(sender, new KadPb.Message { Type = KadPb.Message.Types.MessageType.GetProviders, Key = key }, T0.AddDays(3))!.ProviderPeers, Is.Empty, "expired");
    }

    [Test]
    public void Handler_FindNode_ReturnsKClosestExceptTheRequester()
    {
        var random = new Random(8);
        var (handler, table, _, _) = Handler(KadTestSupport.RandomPeer(random));
        var peers = Enumerable.Range(0, 50).Select(_ => KadTestSupport.RandomPeer(random)).ToList();
        foreach (var p in peers)
        {
            table.AddOrRefresh(p);
        }
        var key = ByteString.CopyFromUtf8("find");
        var response = handler.Handle(peers[0], new KadPb.Message { Type = KadPb.Message.Types.MessageType.FindNode, Key = key }, T0)!;
        var expected = table.Closest(KadKey.FromKey(key.Span), 20, exclude: peers[0]).Select(p => ByteString.CopyFrom(p.Bytes));
        Assert.That(response.CloserPeers.Select(p => p.Id), Is.EqualTo(expected));
    }

    private sealed class HighestByteValidator : IRecordValidator
    {
        public bool Validate(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value) => value.Length == 1;

        public int Select(ReadOnlySpan<byte> key, IReadOnlyList<byte[]> values) =>
            values.Select((v, i) => (v[0], i)).Max().i;
    }
}
