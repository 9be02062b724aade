using Google.Protobuf;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Noise;
using Potluck.Protocol.Noise.Proto;

namespace Potluck.Protocol.Tests.Noise;

public class NoisePayloadTests
{
    private static readonly byte[] StaticKey = Enumerable.Range(100, 32).Select(i => (byte)i).ToArray();
    private static readonly NoiseOptions Options = new();

    [TestCase(KeyType.Rsa), TestCase(KeyType.Secp256k1), TestCase(KeyType.Ecdsa)]
    public void Verify_SignedByNonEd25519Identity_AcceptsAndDerivesPeerId(KeyType type)
    {
        var identity = ForeignIdentity.Of(type);
        var payload = NoisePayload.Encode(identity.PublicKey, identity.Sign(NoisePayload.SignedData(StaticKey)), []);

        var remote = NoisePayload.Verify(payload, StaticKey, Options);

        Assert.That(remote.Key, Is.EqualTo(identity.PublicKey));
        Assert.That(remote.Peer, Is.EqualTo(identity.PublicKey.ToPeerId()));
        Assert.That(remote.EarlyMuxers, Is.Empty);
    }

    [TestCase(KeyType.Rsa), TestCase(KeyType.Secp256k1), TestCase(KeyType.Ecdsa)]
    public void Verify_NonEd25519SignatureOverAnotherStaticKey_IsViolation(KeyType type)
    {
        var identity = ForeignIdentity.Of(type);
        var other = StaticKey.ToArray();
        other[0] ^= 1;
        var payload = NoisePayload.Encode(identity.PublicKey, identity.Sign(NoisePayload.SignedData(other)), []);

        Assert.Throws<ProtocolViolationException>(() => NoisePayload.Verify(payload, StaticKey, Options));
    }

    [Test]
    public void Verify_Ed25519WithMuxers_ReturnsMuxersInOrder()
    {
        var key = NoiseTestSupport.Key(7);
        var payload = NoisePayload.Encode(key.PublicKey, key.Sign(NoisePayload.SignedData(StaticKey)), ["/yamux/1.0.0", "/mplex/6.7.0"]);

        var remote = NoisePayload.Verify(payload, StaticKey, Options);

        Assert.That(remote.Peer, Is.EqualTo(key.PeerId));
        Assert.That(remote.EarlyMuxers, Is.EqualTo(new[] { "/yamux/1.0.0", "/mplex/6.7.0" }));
    }

    [Test]
    public void Verify_JsStylePayloadWithCertHashesAndUnknownField_IsAccepted()
    {
        // js-libp2p writes proto2 optional fields; here the extensions come first, with webtransport
        // certhashes and an unknown field 7, none of which may trip the decoder.
        var key = NoiseTestSupport.Key(8);
        var extensions = new NoiseExtensions();
        extensions.WebtransportCerthashes.Add(ByteString.CopyFrom(1, 2, 3));
        extensions.StreamMuxers.Add("/yamux/1.0.0");
        var output = new MemoryStream();
        var cos = new CodedOutputStream(output);
        cos.WriteTag(4, WireFormat.WireType.LengthDelimited);
        cos.WriteMessage(extensions);
        cos.WriteTag(7, WireFormat.WireType.Varint);
        cos.WriteUInt32(99);
        cos.WriteTag(1, WireFormat.WireType.LengthDelimited);
        cos.WriteBytes(ByteString.CopyFrom(key.PublicKey.ToProtobuf()));
        cos.WriteTag(2, WireFormat.WireType.LengthDelimited);
        cos.WriteBytes(ByteString.CopyFrom(key.Sign(NoisePayload.SignedData(StaticKey))));
        cos.Flush();

        var remote = NoisePayload.Verify(output.ToArray(), StaticKey, Options);

        Assert.That(remote.Peer, Is.EqualTo(key.PeerId));
        Assert.That(remote.EarlyMuxers, Is.EqualTo(new[] { "/yamux/1.0.0" }));
    }

    [Test]
    public void Verify_TooManyMuxers_IsViolation()
    {
        var key = NoiseTestSupport.Key(9);
        var muxers = Enumerable.Range(0, 17).Select(i => $"/m/{i}").ToArray();
        var payload = NoisePayload.Encode(key.PublicKey, key.Sign(NoisePayload.SignedData(StaticKey)), muxers);

        Assert.Throws<ProtocolViolationException>(() => NoisePayload.Verify(payload, StaticKey, Options));
    }

    [Test]
    public void Verify_MissingSignatureOrKey_IsViolation()
    {
        var key = NoiseTestSupport.Key(10);
        var noSig = new NoiseHandshakePayload { IdentityKey = ByteString.CopyFrom(key.PublicKey.ToProtobuf()) }.ToByteArray();
        var noKey = new NoiseHandshakePayload { IdentitySig = ByteString.CopyFrom(key.Sign(NoisePayload.SignedData(StaticKey))) }.ToByteArray();

        Assert.Throws<ProtocolViolationException>(() => NoisePayload.Verify(noSig, StaticKey, Options));
        Assert.Throws<ProtocolViolationException>(() => NoisePayload.Verify(noKey, StaticKey, Options));
        Assert.Throws<ProtocolViolationException>(() => NoisePayload.Verify([], StaticKey, Options));
    }

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public bool Verify_RandomBytes_IsViolationOrNothing(byte[] payload)
    {
        try
        {
            NoisePayload.Verify(payload, StaticKey, Options);
            return false; // random bytes can never carry a valid signature
        }
        catch (ProtocolViolationException)
        {
            return true;
        }
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public bool Verify_MutatedValidPayload_IsViolationOrStillTheSamePeer(int position, byte xor)
    {
        var key = NoiseTestSupport.Key(11);
        var payload = NoisePayload.Encode(key.PublicKey, key.Sign(NoisePayload.SignedData(StaticKey)), ["/yamux/1.0.0"]);
        payload[(position & int.MaxValue) % payload.Length] ^= xor;
        try
        {
            return NoisePayload.Verify(payload, StaticKey, Options).Peer == key.PeerId;
        }
        catch (ProtocolViolationException)
        {
            return true;
        }
    }
}
