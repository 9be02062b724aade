using System.Reflection;
using System.Runtime.InteropServices;

namespace Potluck.Protocol.Identity;

/// <summary>
/// Loading of the system's libsodium (https://doc.libsodium.org), used for Ed25519 (<see cref="SodiumEd25519"/>) and
/// X25519 (<c>Noise/SodiumX25519</c>) because it is faster than both BouncyCastle's managed code and OpenSSL 3.0 here.
/// The library is looked up as <c>libsodium.so.23</c> (Debian's libsodium23, 1.0.18) and then as plain
/// <c>libsodium</c>; <c>sodium_init</c> runs once before any other call. When it is missing or refuses to start,
/// <see cref="IsAvailable"/> is false and callers keep their other paths (BouncyCastle for Ed25519; OpenSSL, then BouncyCastle, for X25519).
/// <c>POTLUCK_NO_SODIUM=1</c> turns it off (to compare with the older paths in one build).
/// </summary>
internal static class LibSodium
{
    /// <summary>The name every <c>DllImport</c> of libsodium uses; the resolver maps it to the first library that loads.</summary>
    public const string Name = "libsodium.so.23";

    private const string FallbackName = "libsodium";

    private static readonly bool Available = Initialize();

    /// <summary>True when libsodium loaded and <c>sodium_init</c> succeeded (and it is not turned off).</summary>
    public static bool IsAvailable => Available;

    private static bool Initialize()
    {
        if (Environment.GetEnvironmentVariable("POTLUCK_NO_SODIUM") == "1")
        {
            return false;
        }
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(LibSodium).Assembly, Resolve);
        }
        catch (InvalidOperationException)
        {
            // Another resolver is already set for this assembly: DllImport then tries Name itself.
        }
        try
        {
            return sodium_init() >= 0; // 0: initialised now, 1: already initialised, -1: failure
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            return false;
        }
    }

    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (libraryName != Name)
        {
            return IntPtr.Zero; // the default lookup, for every other library
        }
        return NativeLibrary.TryLoad(Name, assembly, searchPath, out var handle)
               || NativeLibrary.TryLoad(FallbackName, assembly, searchPath, out handle)
            ? handle
            : IntPtr.Zero;
    }

#pragma warning disable SYSLIB1054 // LibraryImport generates unsafe code, which this project does not allow.
    [DllImport(Name)]
    private static extern int sodium_init();
#pragma warning restore SYSLIB1054
}
