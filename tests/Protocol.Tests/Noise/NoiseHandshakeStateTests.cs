using Potluck.Protocol.Noise;

namespace Potluck.Protocol.Tests.Noise;

public class NoiseHandshakeStateTests
{
    // The Noise_XX_25519_ChaChaPoly_SHA256 vector of the cacophony suite (as shipped in mcginty/snow's
    // tests/vectors/cacophony.txt): prologue "John Galt", payloads in every message, then transport messages
    // alternating initiator → responder → initiator.
    private const string Prologue = "4a6f686e2047616c74";
    private const string InitStatic = "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1";
    private const string InitEphemeral = "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a";
    private const string RespStatic = "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893";
    private const string RespEphemeral = "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b";
    private const string HandshakeHash = "c8e5f64e846193be2a834104c2a009868d6c9f3bd3c186299888b488b2f1f58e";

    private static readonly (string Payload, string Ciphertext)[] Messages =
    [
        ("4c756477696720766f6e204d69736573",
         "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79444c756477696720766f6e204d69736573"),
        ("4d757272617920526f746862617264",
         "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f14480884381cbad1f276e038c48378ffce2b65285e08d6b68aaa3629a5a8639392490e5b9bd5269c2f1e4f488ed8831161f19b7815528f8982ffe09be9b5c412f8a0db50f8814c7194e83f23dbd8d162c9326ad"),
        ("462e20412e20486179656b",
         "c7195ffacac1307ff99046f219750fc47693e23c3cb08b89c2af808b444850a80ae475b9df0f169ae80a89be0865b57f58c9fea0d4ec82a286427402f113e4b6ae769a1d95941d49b25030"),
        ("4361726c204d656e676572", "96763ed773f8e47bb3712f0e29b3060ffc956ffc146cee53d5e1df"),
        ("4a65616e2d426170746973746520536179", "3e40f15f6f3a46ae446b253bf8b1d9ffb6ed9b174d272328ff91a7e2e5c79c07f5"),
        ("457567656e2042f6686d20766f6e2042617765726b", "eb3f3515110702e047a6c9da4478b6ead94873c11c0f2d710ddb3f09fce024b3a58502ae3f"),
    ];

    [Test]
    public void CacophonyVector_XX25519ChaChaPolySha256_ReproducesEveryMessageAndTheHandshakeHash()
    {
        using var initStatic = X25519KeyPair.FromPrivate(Convert.FromHexString(InitStatic));
        using var respStatic = X25519KeyPair.FromPrivate(Convert.FromHexString(RespStatic));
        var prologue = Convert.FromHexString(Prologue);
        using var initiator = new NoiseHandshakeState(true, initStatic, prologue, X25519KeyPair.FromPrivate(Convert.FromHexString(InitEphemeral)));
        using var responder = new NoiseHandshakeState(false, respStatic, prologue, X25519KeyPair.FromPrivate(Convert.FromHexString(RespEphemeral)));

        for (var i = 0; i < 3; i++)
        {
            var (sender, receiver) = i % 2 == 0 ? (initiator, responder) : (responder, initiator);
            var payload = Convert.FromHexString(Messages[i].Payload);
            var message = new byte[sender.MessageLength(payload.Length)];
            Assert.That(sender.WriteMessage(payload, message), Is.EqualTo(message.Length));
            Assert.That(Convert.ToHexStringLower(message), Is.EqualTo(Messages[i].Ciphertext), $"message {i}");
            var received = new byte[message.Length];
            var n = receiver.ReadMessage(message, received);
            Assert.That(received[..n], Is.EqualTo(payload), $"payload {i}");
        }

        Assert.That(initiator.IsComplete && responder.IsComplete, Is.True);
        Assert.That(Convert.ToHexStringLower(initiator.HandshakeHash), Is.EqualTo(HandshakeHash));
        Assert.That(Convert.ToHexStringLower(responder.HandshakeHash), Is.EqualTo(HandshakeHash));
        Assert.That(initiator.RemoteStaticKey.ToArray(), Is.EqualTo(respStatic.PublicKey.ToArray()));
        Assert.That(responder.RemoteStaticKey.ToArray(), Is.EqualTo(initStatic.PublicKey.ToArray()));

        var (iSend, iReceive) = initiator.Split();
        var (rSend, rReceive) = responder.Split();
        using (iSend)
        using (iReceive)
        using (rSend)
        using (rReceive)
        {
            for (var i = 3; i < Messages.Length; i++)
            {
                var (send, receive) = i % 2 == 1 ? (rSend, iReceive) : (iSend, rReceive);
                var payload = Convert.FromHexString(Messages[i].Payload);
                var ciphertext = new byte[payload.Length + NoiseCipherState.TagLength];
                send.Encrypt(default, payload, ciphertext);
                Assert.That(Convert.ToHexStringLower(ciphertext), Is.EqualTo(Messages[i].Ciphertext), $"transport message {i}");
                var plaintext = new byte[payload.Length];
                Assert.That(receive.TryDecrypt(default, ciphertext, plaintext), Is.True);
                Assert.That(plaintext, Is.EqualTo(payload));
            }
        }
    }

    [Test]
    public void ReadMessage_TamperedStaticKey_IsViolationAndStateIsUnusable()
    {
        using var s1 = X25519KeyPair.Generate();
        using var s2 = X25519KeyPair.Generate();
        using var initiator = new NoiseHandshakeState(true, s1, []);
        using var responder = new NoiseHandshakeState(false, s2, []);
        var m1 = new byte[initiator.MessageLength(0)];
        initiator.WriteMessage([], m1);
        responder.ReadMessage(m1, new byte[m1.Length]);
        var m2 = new byte[responder.MessageLength(0)];
        responder.WriteMessage([], m2);
        m2[40] ^= 1;

        Assert.Throws<ProtocolViolationException>(() => initiator.ReadMessage(m2, new byte[m2.Length]));
        Assert.Throws<InvalidOperationException>(() => initiator.ReadMessage(m2, new byte[m2.Length]));
    }

    [Test]
    public void ReadMessage_TooShort_IsViolation()
    {
        using var s = X25519KeyPair.Generate();
        using var responder = new NoiseHandshakeState(false, s, []);
        Assert.Throws<ProtocolViolationException>(() => responder.ReadMessage(new byte[31], new byte[31]));
    }

    [Test]
    public void WriteMessage_AfterLowOrderRemoteEphemeral_IsViolation()
    {
        using var s = X25519KeyPair.Generate();
        using var responder = new NoiseHandshakeState(false, s, []);
        var zeroKey = new byte[32]; // the identity point: every DH with it is all zeros
        responder.ReadMessage(zeroKey, new byte[32]);
        var m2 = new byte[responder.MessageLength(0)];
        Assert.Throws<ProtocolViolationException>(() => responder.WriteMessage([], m2));
    }

    [Test]
    public void WriteMessage_OutOfTurn_Throws()
    {
        using var s = X25519KeyPair.Generate();
        using var responder = new NoiseHandshakeState(false, s, []);
        Assert.That(responder.IsWriteTurn, Is.False);
        Assert.Throws<InvalidOperationException>(() => responder.WriteMessage([], new byte[200]));
    }

    /// <summary>
    /// The cipher state against BouncyCastle's ChaCha20-Poly1305, an independent implementation used here only as a
    /// reference, with Noise's nonces (4 zero bytes ‖ little-endian counter) for the first messages and one far along.
    /// </summary>
    [Test]
    public void CipherState_MatchesAnIndependentChaCha20Poly1305_AndRejectsAFlippedTag()
    {
        var key = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        using var sender = new NoiseCipherState(key);
        using var receiver = new NoiseCipherState(key);
        var random = new Random(8439);
        for (ulong n = 0; n < 3; n++)
        {
            var plaintext = new byte[n == 1 ? 0 : 1000 + (int)n];
            random.NextBytes(plaintext);
            var ours = new byte[plaintext.Length + 16];
            sender.Encrypt("ad"u8, plaintext, ours);
            Assert.That(ours, Is.EqualTo(ReferenceSeal(key, n, "ad"u8.ToArray(), plaintext)), $"message {n}");

            var tampered = (byte[])ours.Clone();
            tampered[^1] ^= 1;
            var output = new byte[plaintext.Length];
            Assert.That(receiver.TryDecrypt("ad"u8, tampered, output), Is.False);
            Assert.That(receiver.Nonce, Is.EqualTo(n), "a failed decryption does not consume the nonce");
            Assert.That(receiver.TryDecrypt("ad"u8, ours, output), Is.True);
            Assert.That(output, Is.EqualTo(plaintext));
            Assert.That(receiver.Nonce, Is.EqualTo(n + 1));
        }
    }

    [Test]
    public void CipherState_WrongAssociatedDataOrTruncatedTag_IsRejectedAndLeavesZeros()
    {
        var key = new byte[32];
        key[0] = 1;
        using var sender = new NoiseCipherState(key);
        using var receiver = new NoiseCipherState(key);
        var sealedMessage = new byte[64 + 16];
        sender.Encrypt("h"u8, new byte[64], sealedMessage);
        var output = Enumerable.Repeat((byte)0xaa, 64).ToArray();
        Assert.That(receiver.TryDecrypt("H"u8, sealedMessage, output), Is.False);
        Assert.That(output, Is.All.EqualTo(0));
        Assert.That(receiver.TryDecrypt("h"u8, sealedMessage.AsSpan(0, 15), output), Is.False);
        Assert.That(receiver.TryDecrypt("h"u8, sealedMessage, output), Is.True);
    }

    private static byte[] ReferenceSeal(byte[] key, ulong counter, byte[] associatedData, byte[] plaintext)
    {
        var nonce = new byte[12];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(nonce.AsSpan(4), counter);
        var cipher = new Org.BouncyCastle.Crypto.Modes.ChaCha20Poly1305();
        cipher.Init(true, new Org.BouncyCastle.Crypto.Parameters.AeadParameters(
            new Org.BouncyCastle.Crypto.Parameters.KeyParameter(key), 128, nonce, associatedData));
        var output = new byte[plaintext.Length + 16];
        var n = cipher.ProcessBytes(plaintext, 0, plaintext.Length, output, 0);
        cipher.DoFinal(output, n);
        return output;
    }
}
