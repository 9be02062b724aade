using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Potluck.Node.Control;

/// <summary>
/// The control API's files in the data directory: <c>control.token</c> (the secret, owner-only), <c>control.json</c>
/// (where the running node listens, owner-only, removed when it stops) and <c>node.lock</c> (held while a node runs).
/// </summary>
public static class ControlFiles
{
    public const string TokenFileName = "control.token";
    public const string EndpointFileName = "control.json";
    public const string LockFileName = "node.lock";

    public static string TokenPath(string dataDir) => Path.Combine(Path.GetFullPath(dataDir), TokenFileName);

    public static string EndpointPath(string dataDir) => Path.Combine(Path.GetFullPath(dataDir), EndpointFileName);

    private const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>Holds the data directory for one node; released when the stream is disposed (or the process ends).</summary>
    /// <exception cref="IOException">Another node holds it.</exception>
    public static FileStream LockDataDir(string dataDir)
    {
        var path = Path.Combine(dataDir, LockFileName);
        try
        {
            var options = new FileStreamOptions { Mode = FileMode.OpenOrCreate, Access = FileAccess.ReadWrite, Share = FileShare.None };
            if (!OperatingSystem.IsWindows())
            {
                options.UnixCreateMode = OwnerOnly;
            }
            return new FileStream(path, options);
        }
        catch (IOException e) when (e is not FileNotFoundException and not DirectoryNotFoundException)
        {
            throw new DataDirInUseException($"another potluck node is already running with data dir {dataDir} (it holds {path}); stop it or use another --data-dir", e);
        }
    }

    /// <summary>The token, made (32 random bytes, base64url) and written owner-only on first use.</summary>
    /// <exception cref="IOException">The file is unreadable, or not a token.</exception>
    public static byte[] LoadOrCreateToken(string dataDir)
    {
        var path = TokenPath(dataDir);
        if (File.Exists(path))
        {
            if (!OperatingSystem.IsWindows() && (File.GetUnixFileMode(path) & (UnixFileMode.GroupRead | UnixFileMode.OtherRead | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
            {
                File.SetUnixFileMode(path, OwnerOnly);
            }
            var text = File.ReadAllText(path).Trim();
            if (text.Length is < 16 or > 256 || !text.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            {
                throw new IOException($"{path} is not a control token (16 to 256 characters of A-Z, a-z, 0-9, - and _); delete it and a new one is made at the next start");
            }
            return Encoding.ASCII.GetBytes(text);
        }
        var token = Base64Url(RandomNumberGenerator.GetBytes(32));
        WriteOwnerOnly(path, token + "\n");
        return Encoding.ASCII.GetBytes(token);
    }

    /// <summary>Reads the token a client sends.</summary>
    /// <exception cref="NodeNotRunningException">There is no token file.</exception>
    /// <exception cref="IOException">It cannot be read (another user's node, for one).</exception>
    public static string ReadToken(string dataDir)
    {
        var path = TokenPath(dataDir);
        try
        {
            return File.ReadAllText(path).Trim();
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new NodeNotRunningException(dataDir);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new IOException($"cannot read the control token {path}: {e.Message} (it belongs to the user the node runs as; run this command as that user)", e);
        }
    }

    public static void WriteEndpoint(string dataDir, Uri address) =>
        WriteOwnerOnly(EndpointPath(dataDir), new JsonObject { ["url"] = address.ToString(), ["pid"] = Environment.ProcessId }.ToJsonString() + "\n");

    /// <summary>The address of the node running on the data directory.</summary>
    /// <exception cref="NodeNotRunningException">No control.json, or a broken one.</exception>
    public static Uri ReadEndpoint(string dataDir)
    {
        var path = EndpointPath(dataDir);
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists || info.Length > 4096)
            {
                throw new NodeNotRunningException(dataDir);
            }
            var url = JsonNode.Parse(File.ReadAllText(path))?["url"]?.GetValue<string>();
            return url is not null && Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.IsLoopback
                ? uri
                : throw new NodeNotRunningException(dataDir);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            throw new NodeNotRunningException(dataDir);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new IOException($"cannot read {path}: {e.Message} (run this command as the user the node runs as)", e);
        }
    }

    public static void DeleteEndpoint(string dataDir)
    {
        try
        {
            File.Delete(EndpointPath(dataDir));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    /// <summary>Writes a file readable by its owner only, replacing any, atomically (a temporary file renamed into place).</summary>
    public static void WriteOwnerOnly(string path, string text)
    {
        var temporary = path + "." + Environment.ProcessId + ".tmp";
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = OwnerOnly;
        }
        using (var stream = new FileStream(temporary, options))
        {
            stream.Write(Encoding.UTF8.GetBytes(text));
            stream.Flush(flushToDisk: true);
        }
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(temporary, OwnerOnly);
        }
        File.Move(temporary, path, overwrite: true);
    }

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}

/// <summary>Another process holds the data directory's lock.</summary>
public sealed class DataDirInUseException(string message, Exception inner) : IOException(message, inner);
