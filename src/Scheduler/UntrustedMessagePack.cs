using System.Text;
using MessagePack;

namespace Potluck.Scheduler;

/// <summary>
/// What reading untrusted MessagePack by hand (<see cref="MessagePackReader"/>) throws for bytes that do not decode.
/// The serializer wraps its failures in <see cref="MessagePackSerializationException"/>; the reader does not: a string
/// or binary header whose length runs past the input throws <see cref="ArgumentOutOfRangeException"/> from the
/// sequence slice, a truncated value <see cref="EndOfStreamException"/>, invalid UTF-8 <see cref="DecoderFallbackException"/>
/// and an integer out of range <see cref="OverflowException"/>. Found by <c>scripts/fuzz/run.sh</c> (the advertisement
/// envelope and the task payload threw an untyped <see cref="ArgumentOutOfRangeException"/> on about 1 in 4,000 inputs).
/// Use only around code that decodes, never around code that could fail for our own reasons.
/// </summary>
internal static class UntrustedMessagePack
{
    public static bool IsMalformed(Exception e) =>
        e is MessagePackSerializationException or EndOfStreamException or ArgumentOutOfRangeException or DecoderFallbackException or OverflowException;
}
