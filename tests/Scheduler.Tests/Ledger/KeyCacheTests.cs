using FsCheck;
using FsCheck.Fluent;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>The cache answers exactly as the parsers it stands in for, first time and every time after.</summary>
public class KeyCacheTests
{
    private static readonly PrivateKey[] Keys = [.. Enumerable.Range(1, 4).Select(CreditsFixtures.Key)];

    [Test]
    public void ValidPeersAndKeys_SameAnswerAsTheParser_HitOrMiss()
    {
        foreach (var key in Keys)
        {
            var peerBytes = key.PeerId.ToBytes();
            var protobuf = key.PublicKey.ToProtobuf();
            for (var round = 0; round < 3; round++)
            {
                Assert.That(KeyCache.TryPeer(peerBytes, out var peer), Is.True);
                Assert.That(peer, Is.EqualTo(key.PeerId));
                Assert.That(KeyCache.TryPublicKey(protobuf, out var publicKey), Is.True);
                Assert.That(publicKey!.ToProtobuf(), Is.EqualTo(protobuf));
                Assert.That(publicKey.Verify("m"u8, key.Sign("m"u8)), Is.True);
            }
        }
    }

    [Test]
    public void InvalidBytes_RejectedLikeTheParser_AndNeverRemembered()
    {
        var peerBytes = Keys[0].PeerId.ToBytes();
        var damaged = peerBytes.ToArray();
        damaged[^1] ^= 0xFF;
        for (var round = 0; round < 2; round++)
        {
            Assert.That(KeyCache.TryPeer(damaged, out _), Is.EqualTo(PeerId.TryFromBytes(damaged, out _)));
            Assert.That(KeyCache.TryPeer(peerBytes[..^1], out _), Is.False);
            Assert.That(KeyCache.TryPublicKey(peerBytes[2..^1], out _), Is.False);
        }
    }

    [Test]
    public void PastCapacity_StillAnswersCorrectly()
    {
        for (var i = 0; i < KeyCache.Capacity + 10; i++)
        {
            var bytes = new byte[] { 0x12, 0x20 }.Concat(BitConverter.GetBytes(i)).Concat(new byte[28]).ToArray();
            Assert.That(KeyCache.TryPeer(bytes, out var peer), Is.True);
            Assert.That(peer.ToBytes(), Is.EqualTo(bytes));
        }
        Assert.That(KeyCache.TryPeer(Keys[1].PeerId.ToBytes(), out var known), Is.True);
        Assert.That(known, Is.EqualTo(Keys[1].PeerId));
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property ArbitraryBytes_SameAnswerAsTheParser() =>
        Prop.ForAll(Gen.OneOf(
                Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b)),
                Gen.Elements(Keys).Select(k => k.PeerId.ToBytes()),
                Gen.Elements(Keys).Select(k => k.PublicKey.ToProtobuf()))
            .ToArbitrary(), bytes =>
        {
            var peerOk = KeyCache.TryPeer(bytes, out var peer) == PeerId.TryFromBytes(bytes, out var reference) && peer == reference;
            var keyOk = KeyCache.TryPublicKey(bytes, out var key) == PublicKey.TryFromProtobuf(bytes, out var referenceKey)
                && (key is null || key.ToProtobuf().AsSpan().SequenceEqual(referenceKey.ToProtobuf()));
            return peerOk && keyOk;
        });
}
