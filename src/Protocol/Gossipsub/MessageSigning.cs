using System.Buffers;
using System.Text;
using Google.Protobuf;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Gossipsub;

/// <summary>Why a received message failed authentication.</summary>
internal enum SignatureFailure
{
    None,
    MissingSignature,
    MissingFrom,
    MissingSeqno,
    BadFrom,
    BadKey,
    KeyMismatch,
    BadSignature,
    UnexpectedSignature,
}

/// <summary>
/// Message signing per https://github.com/libp2p/specs/blob/master/pubsub/README.md#message-signing: the
/// signature covers "libp2p-pubsub:" followed by the Message protobuf without its signature and key fields.
/// The key is sent only when the author's peer id does not embed it.
/// Note: the spec signs a re-serialisation of the message; Google.Protobuf writes known fields in field order and
/// keeps unknown fields, as go and js do, so the bytes match what the author signed.
/// </summary>
internal static class MessageSigning
{
    private static readonly byte[] Prefix = Encoding.ASCII.GetBytes("libp2p-pubsub:");

    public static void Sign(Pb.Message message, ISigner key)
    {
        message.ClearSignature();
        message.ClearKey();
        using (var signed = new SignedBytes(message))
        {
            message.Signature = ByteString.CopyFrom(key.Sign(signed.Span));
        }
        if (key.PeerId.TryExtractPublicKey() is null)
        {
            message.Key = ByteString.CopyFrom(key.PublicKey.ToProtobuf());
        }
    }

    public static SignatureFailure Verify(Pb.Message message, SignaturePolicy policy)
    {
        if (policy == SignaturePolicy.StrictNoSign)
        {
            return message.HasSignature || message.HasKey || message.HasFrom || message.HasSeqno
                ? SignatureFailure.UnexpectedSignature
                : SignatureFailure.None;
        }
        if (!message.HasSignature || message.Signature.Length == 0)
        {
            return SignatureFailure.MissingSignature;
        }
        if (message.Signature.Length > PublicKey.MaxSignatureLength)
        {
            return SignatureFailure.BadSignature;
        }
        if (!message.HasFrom)
        {
            return SignatureFailure.MissingFrom;
        }
        if (!message.HasSeqno || message.Seqno.Length == 0)
        {
            return SignatureFailure.MissingSeqno;
        }
        if (!PeerId.TryFromBytes(message.From.Span, out var author))
        {
            return SignatureFailure.BadFrom;
        }
        PublicKey? key;
        if (message.HasKey)
        {
            if (!PublicKey.TryFromProtobuf(message.Key.Span, out var sent))
            {
                return SignatureFailure.BadKey;
            }
            if (!author.Matches(sent))
            {
                return SignatureFailure.KeyMismatch;
            }
            key = sent;
        }
        else
        {
            key = author.TryExtractPublicKey();
            if (key is null)
            {
                return SignatureFailure.BadKey;
            }
        }
        var signature = message.Signature;
        var copy = message.Clone(); // shallow: the payload's ByteString is shared, not copied
        copy.ClearSignature();
        copy.ClearKey();
        using var signed = new SignedBytes(copy);
        return key.Verify(signed.Span, signature.Span) ? SignatureFailure.None : SignatureFailure.BadSignature;
    }

    /// <summary>
    /// The bytes a signature covers, written into a pooled buffer (returned on dispose): a received message is verified
    /// once per message, and a batch of half-blocks is tens of KiB, so a fresh array each time was a copy of every
    /// gossiped payload. Nothing outlives the verification or signature that reads it.
    /// </summary>
    private readonly struct SignedBytes : IDisposable
    {
        private readonly byte[] _buffer;
        private readonly int _length;

        public SignedBytes(Pb.Message unsigned)
        {
            _length = Prefix.Length + unsigned.CalculateSize();
            _buffer = ArrayPool<byte>.Shared.Rent(_length);
            Prefix.CopyTo(_buffer, 0);
            unsigned.WriteTo(_buffer.AsSpan(Prefix.Length, _length - Prefix.Length));
        }

        public ReadOnlySpan<byte> Span => _buffer.AsSpan(0, _length);

        public void Dispose() => ArrayPool<byte>.Shared.Return(_buffer);
    }
}
