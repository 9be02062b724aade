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
        message.Signature = ByteString.CopyFrom(key.Sign(SignedBytes(message)));
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
        var copy = message.Clone();
        copy.ClearSignature();
        copy.ClearKey();
        return key.Verify(SignedBytes(copy), signature.Span) ? SignatureFailure.None : SignatureFailure.BadSignature;
    }

    private static byte[] SignedBytes(Pb.Message unsigned)
    {
        var size = unsigned.CalculateSize();
        var bytes = new byte[Prefix.Length + size];
        Prefix.CopyTo(bytes, 0);
        unsigned.WriteTo(bytes.AsSpan(Prefix.Length));
        return bytes;
    }
}
